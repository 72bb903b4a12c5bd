//! `.dockerignore`, with Docker's semantics: Go's `filepath.Match` patterns
//! (classes, `[^`, escapes), `**`, paths cleaned, `!` exceptions; a bad
//! pattern is an error naming its line.

use std::path::{Path, PathBuf};

use crate::image::BuildError;

/// The patterns of a `.dockerignore` file, as Docker reads them (moby's
/// `patternmatcher`): one per line, `#` comments; each pattern cleaned as Go's
/// `filepath.Clean` does (leading and trailing `/`, `.` and `..` resolved);
/// within a path part `*`, `?`, `[...]` classes (`[^...]` negated, ranges) and
/// `\` escapes, as Go's `filepath.Match`; `**` across any number of parts;
/// `!` to take an exclusion back. The last matching line wins, and a pattern
/// that matches a folder matches all below it.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
pub(crate) struct Rule {
    /// A `!` line: what it matches goes back in.
    keep: bool,
    parts: Vec<Part>,
}

#[derive(Debug)]
pub(crate) enum Part {
    /// `**`: any number of path parts, none included.
    AnyDepth,
    /// One path part's pattern.
    Glob(globset::GlobMatcher),
}

/// A `.dockerignore` line Docker would refuse too (`ErrBadPattern`).
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore:{line}: `{pattern}` is not a valid pattern: {problem}")]
pub struct IgnoreError {
    pub line: usize,
    pub pattern: String,
    /// What globset finds wrong with it.
    pub problem: globset::ErrorKind,
}

impl Ignore {
    /// Reads `path`; a missing file ignores nothing.
    pub fn read(path: &Path) -> Result<Self, BuildError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(BuildError::context(path, source)),
        }
    }

    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = line
                .strip_prefix('!')
                .map_or((false, line), |rest| (true, rest.trim()));
            let cleaned = normalise(&Path::new("/").join(pattern));
            let cleaned = cleaned.to_string_lossy();
            let parts = cleaned
                .split('/')
                .filter(|part| !part.is_empty())
                .map(|part| {
                    if part == "**" {
                        return Ok(Part::AnyDepth);
                    }
                    globset::GlobBuilder::new(&go_pattern(part))
                        .literal_separator(true)
                        .backslash_escape(true)
                        .build()
                        .map(|glob| Part::Glob(glob.compile_matcher()))
                        .map_err(|error| IgnoreError {
                            line: index + 1,
                            pattern: line.to_string(),
                            problem: error.kind().clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !parts.is_empty() {
                rules.push(Rule { keep, parts });
            }
        }
        Ok(Self { rules })
    }

    /// Whether a `!` line could take back something below an excluded folder:
    /// then, as Docker does, excluded folders are walked, not skipped.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|rule| rule.keep)
    }

    /// Whether `relative` (with `/` separators) is left out of the context.
    pub fn excludes(&self, relative: &str) -> bool {
        let parts: Vec<&str> = relative.split('/').collect();
        let mut excluded = false;
        for rule in &self.rules {
            // A pattern matches the path or any folder above it.
            let matched = (1..=parts.len()).any(|length| match_parts(&rule.parts, &parts[..length]));
            if matched {
                excluded = !rule.keep;
            }
        }
        excluded
    }
}

/// One path part of a Go `filepath.Match` pattern in globset's syntax: `[^`
/// negates a class there (`[!` in globset), braces are literal in Go, and a
/// run of `*` within a part is one `*`.
pub(crate) fn go_pattern(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('!');
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            '*' if !in_class => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push('*');
            }
            _ => out.push(c),
        }
    }
    out
}

pub(crate) fn match_parts(pattern: &[Part], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Part::AnyDepth, rest)) => (0..=parts.len()).any(|skip| match_parts(rest, &parts[skip..])),
        Some((Part::Glob(glob), rest)) => parts
            .split_first()
            .is_some_and(|(part, others)| glob.is_match(part) && match_parts(rest, others)),
    }
}

/// Resolves `.` and `..` without touching the file system.
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::FileTimes;
    use crate::image::collect::collect_folder;

    #[test]
    fn dockerignore_patterns() {
        let ignore =
            Ignore::parse("# drafts\ndrafts\n*.psd\n**/*.map\n!keep.psd\n/tmp/\nsecret?.txt\n").unwrap();
        assert!(ignore.excludes("drafts"));
        assert!(ignore.excludes("drafts/a.html"));
        assert!(ignore.excludes("logo.psd"));
        assert!(!ignore.excludes("keep.psd"));
        assert!(!ignore.excludes("img/logo.psd"), "* does not cross folders");
        assert!(ignore.excludes("js/deep/app.js.map"));
        assert!(ignore.excludes("app.js.map"));
        assert!(ignore.excludes("tmp/x"));
        assert!(ignore.excludes("secret1.txt"));
        assert!(!ignore.excludes("secret12.txt"));
        assert!(!ignore.excludes("index.html"));
    }

    /// The examples of Docker's `.dockerignore` documentation, each with what
    /// the documentation says it leaves out.
    #[test]
    fn dockerignore_follows_dockers_documented_examples() {
        let ignore = Ignore::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n").unwrap();
        assert!(ignore.excludes("somedir/temporary.txt"));
        assert!(ignore.excludes("somedir/temp"));
        assert!(ignore.excludes("somedir/subdir/temporary.txt"));
        assert!(ignore.excludes("tempa"));
        assert!(ignore.excludes("tempb"));
        assert!(!ignore.excludes("temporary.txt"), "*/temp* needs a folder above");
        assert!(!ignore.excludes("a/b/c/temporary.txt"));

        let ignore = Ignore::parse("**/*.go\n").unwrap();
        assert!(ignore.excludes("main.go") && ignore.excludes("cmd/tool/main.go"));

        let ignore = Ignore::parse("*.md\n!README.md\n").unwrap();
        assert!(ignore.excludes("CHANGES.md") && !ignore.excludes("README.md"));

        let ignore = Ignore::parse("*.md\n!README*.md\nREADME-secret.md\n").unwrap();
        assert!(!ignore.excludes("README-public.md"));
        assert!(ignore.excludes("README-secret.md") && ignore.excludes("CHANGES.md"));

        let ignore = Ignore::parse("*.md\nREADME-secret.md\n!README*.md\n").unwrap();
        assert!(
            !ignore.excludes("README-secret.md"),
            "the last matching line wins"
        );
    }

    #[test]
    fn dockerignore_classes_escapes_and_cleaning_are_go_filepath_match() {
        let ignore = Ignore::parse("draft[0-9].html\nlog[^s]\n\\*star\n{a,b}\n./sub/../cache/\n").unwrap();
        assert!(ignore.excludes("draft1.html") && !ignore.excludes("draftx.html"));
        assert!(ignore.excludes("logx") && !ignore.excludes("logs"));
        assert!(
            ignore.excludes("*star") && !ignore.excludes("bigstar"),
            "`\\*` is a literal star"
        );
        assert!(
            ignore.excludes("{a,b}") && !ignore.excludes("a"),
            "braces are literal in Go"
        );
        assert!(
            ignore.excludes("cache/x"),
            "the pattern is cleaned as filepath.Clean does"
        );
        let error = Ignore::parse("ok\nbad[\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error
                .to_string()
                .starts_with(".dockerignore:2: `bad[` is not a valid pattern"),
            "{error}"
        );
    }

    #[test]
    fn an_exception_below_an_excluded_folder_is_taken_back_with_its_folders() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("drafts/deep")).unwrap();
        std::fs::write(
            root.path().join(".dockerignore"),
            "drafts\n!drafts/deep/keep.html\n",
        )
        .unwrap();
        for file in [
            "index.html",
            "drafts/a.html",
            "drafts/deep/keep.html",
            "drafts/deep/b.html",
        ] {
            std::fs::write(root.path().join(file), file).unwrap();
        }
        let items = collect_folder(root.path(), &[], &FileTimes::uniform(0)).unwrap();
        let names: Vec<&str> = items.iter().map(|item| item.relative.as_str()).collect();
        assert_eq!(
            names,
            ["drafts", "drafts/deep", "drafts/deep/keep.html", "index.html"]
        );
        // Without a `!` line an excluded folder is left out whole, and its
        // neighbours after it are still walked.
        std::fs::write(root.path().join(".dockerignore"), "drafts\n*.psd\n").unwrap();
        std::fs::write(root.path().join("art.psd"), "art").unwrap();
        std::fs::write(root.path().join("zebra.html"), "zebra").unwrap();
        let items = collect_folder(root.path(), &[], &FileTimes::uniform(0)).unwrap();
        let names: Vec<&str> = items.iter().map(|item| item.relative.as_str()).collect();
        assert_eq!(names, ["index.html", "zebra.html"]);
    }
}
