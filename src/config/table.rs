//! A TOML table read key by key, with the spans of what it read: wrong
//! types and missing keys are reported as they are asked for, unknown keys
//! when the table is finished.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::validate::Checker;

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Reads one table's keys, remembering which were read so the rest can be reported as unknown.
pub(crate) struct TableReader<'a> {
    table: &'a DeTable<'a>,
    pub(crate) span: Range<usize>,
    path: String,
    read: HashSet<String>,
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a> TableReader<'a> {
    pub(crate) fn new(table: &'a DeTable<'a>, span: Range<usize>, path: String) -> Self {
        Self {
            table,
            span,
            path,
            read: HashSet::new(),
        }
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &str) -> Option<(&'a Spanned<toml::de::DeString<'a>>, &'a Spanned<DeValue<'a>>)> {
        self.read.insert(key.to_string());
        self.table.iter().find(|(name, _)| name.get_ref() == key)
    }

    pub(crate) fn string(&mut self, checker: &mut Checker<'_>, key: &str) -> Option<Spanned<String>> {
        let (_, value) = self.get(key)?;
        if let DeValue::String(text) = value.get_ref() {
            Some(Spanned::new(value.span(), text.to_string()))
        } else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!("expected a string, found {}", type_name(value.get_ref())),
            );
            None
        }
    }

    pub(crate) fn required_string(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
    ) -> Option<Spanned<String>> {
        if self.table.iter().any(|(name, _)| name.get_ref() == key) {
            self.string(checker, key)
        } else {
            self.read.insert(key.to_string());
            checker.report(
                self.span.clone(),
                Some(self.key_path(key)),
                format!("missing key `{key}`"),
            );
            None
        }
    }

    pub(crate) fn boolean(&mut self, checker: &mut Checker<'_>, key: &str) -> Option<bool> {
        let (_, value) = self.get(key)?;
        if let DeValue::Boolean(flag) = value.get_ref() {
            Some(*flag)
        } else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!("expected true or false, found {}", type_name(value.get_ref())),
            );
            None
        }
    }

    /// A whole number of at least `least`.
    pub(crate) fn count(&mut self, checker: &mut Checker<'_>, key: &str, least: u32) -> Option<u32> {
        let (_, value) = self.get(key)?;
        let DeValue::Integer(integer) = value.get_ref() else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!("expected a whole number, found {}", type_name(value.get_ref())),
            );
            return None;
        };
        match u32::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(count) if count >= least => Some(count),
            _ => {
                checker.report(
                    value.span(),
                    Some(self.key_path(key)),
                    format!("expected a whole number from {least} to {}", u32::MAX),
                );
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, checker: &mut Checker<'_>, key: &str) -> Option<Duration> {
        self.spanned_duration(checker, key).map(Spanned::into_inner)
    }

    /// A duration (`"90s"`, `"5m"`) and where it is written.
    pub(crate) fn spanned_duration(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
    ) -> Option<Spanned<Duration>> {
        let text = self.string(checker, key)?;
        match humantime::parse_duration(text.get_ref()) {
            Ok(duration) if !duration.is_zero() => Some(Spanned::new(text.span(), duration)),
            Ok(_) => {
                checker.report(
                    text.span(),
                    Some(self.key_path(key)),
                    "the duration must be longer than zero",
                );
                None
            }
            Err(error) => {
                checker.report(
                    text.span(),
                    Some(self.key_path(key)),
                    format!(
                        "`{}` is not a duration ({error}; write for example \"90s\" or \"5m\")",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn string_map(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
    ) -> Option<BTreeMap<String, String>> {
        let (_, value) = self.get(key)?;
        let DeValue::Table(table) = value.get_ref() else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!(
                    "expected a table of strings, found {}",
                    type_name(value.get_ref())
                ),
            );
            return None;
        };
        let mut map = BTreeMap::new();
        for (name, item) in table {
            match item.get_ref() {
                DeValue::String(text) => {
                    map.insert(name.get_ref().to_string(), text.to_string());
                }
                other => checker.report(
                    item.span(),
                    Some(format!("{}.{}", self.key_path(key), name.get_ref())),
                    format!("expected a string, found {}", type_name(other)),
                ),
            }
        }
        Some(map)
    }

    pub(crate) fn table(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
        required: bool,
    ) -> Option<TableReader<'a>> {
        let Some((_, value)) = self.get(key) else {
            if required {
                checker.report(
                    self.span.clone(),
                    Some(self.key_path(key)),
                    format!("missing table [{}]", self.key_path(key)),
                );
            }
            return None;
        };
        if let DeValue::Table(table) = value.get_ref() {
            Some(TableReader::new(table, value.span(), self.key_path(key)))
        } else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!("expected a table, found {}", type_name(value.get_ref())),
            );
            None
        }
    }

    /// An array of strings, each with its span.
    pub(crate) fn string_array(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
    ) -> Option<Vec<Spanned<String>>> {
        let (_, value) = self.get(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!(
                    "expected an array of strings, found {}",
                    type_name(value.get_ref())
                ),
            );
            return None;
        };
        let mut strings = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(text) => strings.push(Spanned::new(item.span(), text.to_string())),
                other => checker.report(
                    item.span(),
                    Some(format!("{}[{index}]", self.key_path(key))),
                    format!("expected a string, found {}", type_name(other)),
                ),
            }
        }
        Some(strings)
    }

    /// A table of tables (`[key.<name>]`): each entry's name, with its span,
    /// and a reader for it.
    pub(crate) fn named_tables(
        &mut self,
        checker: &mut Checker<'_>,
        key: &str,
    ) -> Vec<(Spanned<String>, TableReader<'a>)> {
        let Some(mut outer) = self.table(checker, key, false) else {
            return Vec::new();
        };
        let entries: Vec<_> = outer
            .table
            .iter()
            .map(|(name, _)| Spanned::new(name.span(), name.get_ref().to_string()))
            .collect();
        entries
            .into_iter()
            .filter_map(|name| {
                outer
                    .table(checker, name.get_ref(), false)
                    .map(|reader| (name, reader))
            })
            .collect()
    }

    pub(crate) fn array_of_tables(&mut self, checker: &mut Checker<'_>, key: &str) -> Vec<TableReader<'a>> {
        let Some((_, value)) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            checker.report(
                value.span(),
                Some(self.key_path(key)),
                format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    type_name(value.get_ref())
                ),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                if let DeValue::Table(table) = item.get_ref() {
                    Some(TableReader::new(table, item.span(), format!("{key}[{index}]")))
                } else {
                    checker.report(
                        item.span(),
                        Some(format!("{key}[{index}]")),
                        format!("expected a table, found {}", type_name(item.get_ref())),
                    );
                    None
                }
            })
            .collect()
    }

    /// Reports every key of the table that was never read.
    pub(crate) fn finish(self, checker: &mut Checker<'_>) {
        for (name, _) in self.table {
            if !self.read.contains(name.get_ref().as_ref()) {
                checker.report(name.span(), Some(self.key_path(name.get_ref())), "unknown key");
            }
        }
    }
}
