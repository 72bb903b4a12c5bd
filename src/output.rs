//! Everything the user sees goes through one [`Printer`].
//!
//! 1. Progress lines (one per stage per site) go to stderr, with a timestamp when
//!    stderr is not a terminal or `CI` is set, in colour only on a terminal
//!    without `NO_COLOR`.
//! 2. Results (tables, JSON documents) go to stdout.
//! 3. `-q` keeps only warnings, errors and results; `-v` adds detail lines.
//!
//! Logs for debugging go through `tracing` to stderr and are off unless
//! `BERTH_LOG` or `-vv` turns them on.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// What a stage line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Started,
    Done,
    Skipped,
    Warning,
    Failed,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Self::Started => "..",
            Self::Done => "ok",
            Self::Skipped => "skip",
            Self::Warning => "warn",
            Self::Failed => "FAIL",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::Started => "\x1b[2m",
            Self::Done => "\x1b[32m",
            Self::Skipped => "\x1b[36m",
            Self::Warning => "\x1b[33m",
            Self::Failed => "\x1b[31;1m",
        }
    }
}

/// The one place that writes for the user. Cheap to clone.
#[derive(Clone)]
pub struct Printer {
    inner: Arc<Inner>,
}

struct Inner {
    verbosity: Verbosity,
    colour: bool,
    timestamps: bool,
    /// Live progress lines (rewritten in place) only on a terminal.
    live: bool,
    /// The live board: one line per site with a stage in progress (terminal only).
    lock: Mutex<Board>,
}

impl Printer {
    /// Decides colour and timestamps from the environment: a terminal without
    /// `NO_COLOR` gets colour; a non-terminal or `CI` gets timestamps.
    pub fn from_environment(verbosity: Verbosity) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty() && value != "false");
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let mut printer = Self::new(verbosity, terminal && !no_colour && !ci, !terminal || ci);
        Arc::get_mut(&mut printer.inner).expect("not shared yet").live = terminal && !ci;
        printer
    }

    pub fn new(verbosity: Verbosity, colour: bool, timestamps: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                verbosity,
                colour,
                timestamps,
                live: false,
                lock: Mutex::new(Board::default()),
            }),
        }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.inner.verbosity
    }

    fn prefix(&self) -> String {
        if self.inner.timestamps {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let seconds = now.as_secs() % 86_400;
            format!(
                "{:02}:{:02}:{:02} ",
                seconds / 3600,
                seconds / 60 % 60,
                seconds % 60
            )
        } else {
            String::new()
        }
    }

    fn paint(&self, colour: &str, text: &str) -> String {
        if self.inner.colour {
            format!("{colour}{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Takes the board off the screen, lets `change` write and edit it, puts it back.
    fn redraw(&self, change: impl FnOnce(&mut Board, &mut std::io::StderrLock<'_>)) {
        let mut board = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stderr = std::io::stderr().lock();
        board.erase(&mut stderr);
        change(&mut board, &mut stderr);
        board.draw(&mut stderr);
        let _ = stderr.flush();
    }

    fn write_stderr(&self, line: &str) {
        self.redraw(|_, stderr| {
            let _ = writeln!(stderr, "{line}");
        });
    }

    /// Live progress of one site's stage ("2 of 3 updated replicas are available"):
    /// on a terminal a board of one line per busy site, redrawn in place under the
    /// log; elsewhere a plain line with `-v`.
    pub fn progress(&self, site: &str, stage: &str, text: &str) {
        if self.inner.live && self.inner.verbosity >= Verbosity::Normal {
            let line: String = format!("{site:<14} {stage:<8} {text}")
                .chars()
                .take(150)
                .collect();
            let line = self.paint("\x1b[2m", &line);
            self.redraw(|board, _| {
                board.lines.insert(site.to_string(), line);
            });
        } else {
            self.stage(site, stage, Status::Started, text);
        }
    }

    /// Removes a site's line from the live board.
    pub fn clear_progress(&self, site: &str) {
        if !self.inner.live {
            return;
        }
        self.redraw(|board, _| {
            board.lines.remove(site);
        });
    }

    /// One line about one stage of one site: `www-en  build  ok  a801302c5f31 (2.1s)`.
    pub fn stage(&self, site: &str, stage: &str, status: Status, detail: &str) {
        if status != Status::Started {
            // The stage is over: its live line goes.
            self.clear_progress(site);
        }
        let shown = match status {
            Status::Warning | Status::Failed => true,
            Status::Started => self.inner.verbosity >= Verbosity::Verbose,
            Status::Done | Status::Skipped => self.inner.verbosity >= Verbosity::Normal,
        };
        if !shown {
            return;
        }
        let word = self.paint(status.colour(), &format!("{:<4}", status.word()));
        let mut lines = detail.lines();
        let first = lines.next().unwrap_or_default();
        let mut text = format!("{}{site:<14} {stage:<8} {word} {first}", self.prefix())
            .trim_end()
            .to_string();
        // Further lines of a message (causes, a rollback, command output) stay with it, indented.
        for line in lines {
            text.push_str(&format!(
                "\n{:width$}{line}",
                "",
                width = self.prefix().len() + 29
            ));
        }
        self.write_stderr(&text);
    }

    /// A line of detail, shown with `-v`.
    pub fn detail(&self, text: &str) {
        if self.inner.verbosity >= Verbosity::Verbose {
            for line in text.lines() {
                self.write_stderr(&format!("{}    {line}", self.prefix()));
            }
        }
    }

    /// A note for the user, hidden by `-q`.
    pub fn note(&self, text: &str) {
        if self.inner.verbosity >= Verbosity::Normal {
            self.write_stderr(&format!("{}{text}", self.prefix()));
        }
    }

    pub fn warning(&self, text: &str) {
        let label = self.paint("\x1b[33;1m", "warning:");
        self.write_stderr(&format!("{}{label} {text}", self.prefix()));
    }

    /// An error and its causes, one per line.
    pub fn error(&self, error: &anyhow::Error) {
        let label = self.paint("\x1b[31;1m", "error:");
        let mut text = format!("{label} {error}");
        for cause in error.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        self.write_stderr(&text);
    }

    /// Text that already says it is an error (compiler-style diagnostics), to stderr as it is.
    pub fn diagnostics(&self, text: &str) {
        self.write_stderr(text);
    }

    /// A result on stdout (tables, JSON): never hidden.
    pub fn result(&self, text: &str) {
        let _guard = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "{text}");
        if !text.ends_with('\n') {
            let _ = writeln!(stdout);
        }
        let _ = stdout.flush();
    }
}

/// The lines of the live board and how many are on screen.
#[derive(Default)]
struct Board {
    lines: std::collections::BTreeMap<String, String>,
    drawn: usize,
}

impl Board {
    fn erase(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, out: &mut impl Write) {
        for line in self.lines.values() {
            let _ = writeln!(out, "{line}");
        }
        self.drawn = self.lines.len();
    }
}

/// Lays out rows under a header with columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let text = table(
            &["SITE", "ACTION"],
            &[
                vec!["www-en".into(), "deployed".into()],
                vec!["a".into(), "unchanged".into()],
            ],
        );
        assert_eq!(text, "SITE    ACTION\nwww-en  deployed\na       unchanged\n");
    }
}
