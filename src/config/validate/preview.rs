//! `[preview]`: how a pull request's preview is reached (a host template and
//! an ingress class, for an Ingress), how long an idle one lives, how many a
//! site may have, and whether pull requests from forks are built.

use std::time::Duration;

use toml::Spanned;

use crate::config::table::TableReader;
use crate::config::validate::Checker;
use crate::config::{ForkPolicy, Preview};

/// How long a preview with no push lives by default: 7 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many previews a site may have by default.
pub const DEFAULT_MAX_PREVIEWS: u32 = 10;

impl Checker<'_> {
    /// `[preview]` (its defaults when the file has none).
    pub(super) fn preview_table(&mut self, top: &mut TableReader<'_>) -> Preview {
        let Some(mut table) = top.table(self, "preview", false) else {
            return Preview::default();
        };
        let host = table.string(self, "host");
        if let Some(host) = &host {
            let sample = host.get_ref().replace("{number}", "12").replace("{site}", "www");
            let valid = !sample.is_empty()
                && sample.len() <= 253
                && sample.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !valid {
                self.report(
                    host.span(),
                    Some(table.key_path("host")),
                    format!(
                        "`{}` is not a host name once {{number}} and {{site}} are filled in (lowercase letters, digits, `-` and `.`)",
                        host.get_ref()
                    ),
                );
            }
        }
        let ingress_class = table.string(self, "ingress_class").map(Spanned::into_inner);
        let scheme = match table.string(self, "scheme") {
            None => "https".to_string(),
            Some(scheme) if matches!(scheme.get_ref().as_str(), "http" | "https") => scheme.into_inner(),
            Some(scheme) => {
                self.report(
                    scheme.span(),
                    Some(table.key_path("scheme")),
                    format!("`{}` is not \"http\" or \"https\"", scheme.get_ref()),
                );
                "https".to_string()
            }
        };
        let ttl = table.duration(self, "ttl").unwrap_or(DEFAULT_TTL);
        let max_previews = table
            .count(self, "max_previews", 1)
            .unwrap_or(DEFAULT_MAX_PREVIEWS);
        let forks = match table.string(self, "forks") {
            None => ForkPolicy::Never,
            Some(forks) if forks.get_ref() == "never" => ForkPolicy::Never,
            Some(forks) => match forks.get_ref().strip_prefix("label:") {
                Some(label) if !label.trim().is_empty() => ForkPolicy::Label(label.trim().to_string()),
                _ => {
                    self.report(
                        forks.span(),
                        Some(table.key_path("forks")),
                        format!("`{}` is not \"never\" or \"label:NAME\"", forks.get_ref()),
                    );
                    ForkPolicy::Never
                }
            },
        };
        table.finish(self);
        Preview {
            host: host.map(Spanned::into_inner),
            ingress_class,
            scheme,
            ttl,
            max_previews,
            forks,
        }
    }
}
