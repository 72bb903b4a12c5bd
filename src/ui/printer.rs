//! The [`Printer`]: everything the user sees goes through it.
//!
//! 1. Progress lines (one per stage per site) go to stderr, with a timestamp when
//!    stderr is not a terminal or `CI` is set, in colour as [`colour_on`]
//!    decides (`--color`, `NO_COLOR`, `CLICOLOR_FORCE`, a terminal, a CI that
//!    shows colour).
//! 2. Results (tables, JSON documents) go to stdout.
//! 3. `-q` keeps only warnings, errors and results; `-v` adds detail lines.
//!
//! Logs for debugging go through `tracing` to stderr and are off unless
//! `BERTH_LOG` or `-vv` turns them on.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// `--color`: when to colour what berth writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// As [`colour_on`] decides from the environment.
    Auto,
    Always,
    Never,
}

/// Whether to colour, for `choice` and the environment (`variable` reads one):
/// `always` and `never` win; then `NO_COLOR` (set, not empty) turns colour
/// off and `CLICOLOR_FORCE` (set, not `0`) on, as no-color.org and
/// bixense.com/clicolors say; then a CI whose log shows ANSI colours
/// (GitHub Actions, GitLab CI) gets them; then a terminal gets them, unless
/// it is dumb or `CI` is set.
pub fn colour_on(choice: Colour, variable: impl Fn(&str) -> Option<String>, terminal: bool) -> bool {
    let set = |name: &str| variable(name).filter(|value| !value.is_empty());
    match choice {
        Colour::Always => true,
        Colour::Never => false,
        Colour::Auto if set("NO_COLOR").is_some() => false,
        Colour::Auto if set("CLICOLOR_FORCE").is_some_and(|value| value != "0") => true,
        Colour::Auto if set("GITHUB_ACTIONS").as_deref() == Some("true") => true,
        Colour::Auto if set("GITLAB_CI").as_deref() == Some("true") => true,
        Colour::Auto => {
            terminal
                && set("TERM").as_deref() != Some("dumb")
                && set("CI").is_none_or(|value| value == "false")
        }
    }
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

    fn style(self) -> Style {
        match self {
            Self::Started => Style::new().dim(),
            Self::Done => Style::new().green(),
            Self::Skipped => Style::new().cyan(),
            Self::Warning => Style::new().yellow(),
            Self::Failed => Style::new().red().bold(),
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
    /// Under GitHub Actions (`GITHUB_ACTIONS=true`): problems in files are
    /// also written as workflow annotations ([`Printer::annotation`]).
    annotations: bool,
    /// The live board (terminal only): one line per site with a stage in progress,
    /// redrawn in place under the log. `None` elsewhere.
    board: Option<MultiProgress>,
    /// The board's lines by site (in site order on screen). Held while anything is
    /// written, so lines and the board never interleave.
    lines: Mutex<BTreeMap<String, ProgressBar>>,
    /// Where lines for the user go: stderr, or a test's terminal.
    out: Out,
}

enum Out {
    Stderr,
    #[cfg(test)]
    Term(Box<dyn indicatif::TermLike>),
}

impl Out {
    /// Writes `bytes` as they are.
    fn write(&self, bytes: &[u8]) {
        match self {
            Self::Stderr => {
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(bytes);
                let _ = stderr.flush();
            }
            #[cfg(test)]
            Self::Term(term) => {
                // A terminal turns "\n" into "\r\n"; the test's terminal is told so.
                let text = String::from_utf8_lossy(bytes).replace('\n', "\r\n");
                let _ = term.write_str(&text);
                let _ = term.flush();
            }
        }
    }
}

impl Printer {
    /// Decides colour ([`colour_on`]) and timestamps from `colour` and the
    /// environment: a non-terminal or `CI` gets timestamps.
    pub fn from_environment(verbosity: Verbosity, colour: Colour) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty() && value != "false");
        // indicatif draws nothing on a terminal that cannot move its cursor
        // (`TERM=dumb`): there progress lines are plain `-v` lines, as elsewhere.
        let board = (terminal && !ci)
            .then(|| ProgressDrawTarget::term_like(Box::new(console::Term::buffered_stderr())))
            .filter(|_| !console::is_dumb());
        Self::build(
            verbosity,
            colour_on(colour, |name| std::env::var(name).ok(), terminal),
            !terminal || ci,
            std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
            board,
            Out::Stderr,
        )
    }

    pub fn new(verbosity: Verbosity, colour: bool, timestamps: bool) -> Self {
        Self::build(verbosity, colour, timestamps, false, None, Out::Stderr)
    }

    /// A printer whose board draws to `board` (a terminal), or none.
    ///
    /// The board is drawn on every change, as fast as changes come: callers already
    /// report progress only a few times a second, and a rate limit would leave a
    /// line's last text undrawn until the next change.
    fn build(
        verbosity: Verbosity,
        colour: bool,
        timestamps: bool,
        annotations: bool,
        board: Option<ProgressDrawTarget>,
        out: Out,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                verbosity,
                colour,
                timestamps,
                annotations,
                board: board.map(MultiProgress::with_draw_target),
                lines: Mutex::new(BTreeMap::new()),
                out,
            }),
        }
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

    fn paint(&self, style: &Style, text: &str) -> String {
        if self.inner.colour {
            style.apply_to(text).force_styling(true).to_string()
        } else {
            text.to_string()
        }
    }

    /// The board's lines, held while anything is written.
    fn lines(&self) -> MutexGuard<'_, BTreeMap<String, ProgressBar>> {
        self.inner.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` with the board taken off the screen, then puts the board back.
    fn above_board(&self, write: impl FnOnce()) {
        match &self.inner.board {
            Some(board) => board.suspend(write),
            None => write(),
        }
    }

    fn write_stderr(&self, line: &str) {
        let _lines = self.lines();
        self.above_board(|| self.inner.out.write(format!("{line}\n").as_bytes()));
    }

    /// Live progress of one site's stage ("2 of 3 updated replicas are available"):
    /// on a terminal a board of one line per busy site, redrawn in place under the
    /// log and cut to the terminal's width; elsewhere a plain line with `-v`.
    pub fn progress(&self, site: &str, stage: &str, text: &str) {
        match &self.inner.board {
            Some(board) if self.inner.verbosity >= Verbosity::Normal => {
                let line = self.paint(&Style::new().dim(), &board_line(site, stage, text));
                let mut lines = self.lines();
                if let Some(bar) = lines.get(site) {
                    bar.set_message(line);
                    return;
                }
                let bar = ProgressBar::hidden()
                    .with_style(
                        // `wide_msg` cuts the line to the terminal's width at each draw,
                        // so it never wraps, also after the terminal narrows.
                        ProgressStyle::with_template("{wide_msg}").expect("a valid template"),
                    )
                    .with_message(line);
                let place = lines.keys().take_while(|name| name.as_str() < site).count();
                let bar = board.insert(place, bar);
                bar.tick();
                lines.insert(site.to_string(), bar);
            }
            _ => self.stage(site, stage, Status::Started, text),
        }
    }

    /// Removes a site's line from the live board.
    pub fn clear_progress(&self, site: &str) {
        let Some(board) = &self.inner.board else {
            return;
        };
        let mut lines = self.lines();
        if let Some(bar) = lines.remove(site) {
            board.remove(&bar);
            // Draws the board again without the line.
            board.suspend(|| {});
        }
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
        let word = self.paint(&status.style(), &format!("{:<4}", status.word()));
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
        let label = self.paint(&Style::new().yellow().bold(), "warning:");
        self.write_stderr(&format!("{}{label} {text}", self.prefix()));
    }

    /// An error and its causes, one per line.
    pub fn error(&self, error: &anyhow::Error) {
        let label = self.paint(&Style::new().red().bold(), "error:");
        let mut text = format!("{label} {error}");
        for cause in error.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        self.write_stderr(&text);
    }

    /// Text that already says it is an error (compiler-style diagnostics,
    /// `FILE:LINE:COLUMN: error: ...`), to stderr, its `error:` words in colour.
    pub fn diagnostics(&self, text: &str) {
        let label = self.paint(&Style::new().red().bold(), "error:");
        let lines: Vec<String> = text
            .lines()
            .map(|line| line.replacen(": error: ", &format!(": {label} "), 1))
            .collect();
        self.write_stderr(&lines.join("\n"));
    }

    /// Under GitHub Actions, an error annotation on `file` (at `line` and
    /// `column` when known): `::error file=…,line=…,col=…::message`, which the
    /// runner reads from stderr as from stdout and shows on the file's line.
    /// Elsewhere nothing.
    pub fn annotation(&self, file: &str, line: Option<usize>, column: Option<usize>, message: &str) {
        if self.inner.annotations {
            self.write_stderr(&annotation_line(file, line, column, message));
        }
    }

    /// A result on stdout (tables, JSON): never hidden. The board leaves the
    /// screen meanwhile, as stdout is often the same terminal.
    pub fn result(&self, text: &str) {
        let _lines = self.lines();
        self.above_board(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{text}");
            if !text.ends_with('\n') {
                let _ = writeln!(stdout);
            }
            let _ = stdout.flush();
        });
    }

    /// What `tracing` writes its logs to: each event goes through the printer, so
    /// logs go above the live board instead of into it.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            printer: self.clone(),
        }
    }
}

/// A log event's bytes, written above the live board ([`Printer::log_writer`]).
pub struct LogWriter {
    printer: Printer,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // tracing's fmt layer writes each event whole, in one call.
        let printer = &self.printer;
        let _lines = printer.lines();
        printer.above_board(|| printer.inner.out.write(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A GitHub Actions `::error` workflow command, its values escaped as the
/// Actions toolkit escapes them (`%`, CR and LF; in properties `:` and `,` too).
fn annotation_line(file: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    let data = |text: &str| text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let property = |text: &str| data(text).replace(':', "%3A").replace(',', "%2C");
    let mut properties = vec![format!("file={}", property(file))];
    if let Some(line) = line {
        properties.push(format!("line={line}"));
    }
    if let Some(column) = column {
        properties.push(format!("col={column}"));
    }
    properties.push("title=berth".into());
    format!("::error {}::{}", properties.join(","), data(message))
}

/// A site's line on the live board, before it is cut to the terminal's width:
/// `SITE STAGE text`, on one line (line breaks and tabs in `text` become spaces).
fn board_line(site: &str, stage: &str, text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{site:<14} {stage:<8} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, TermLike};

    /// A terminal in memory for the board, which also keeps each piece of text
    /// the board writes (a whole line, without cursor moves).
    #[derive(Debug, Clone)]
    struct Screen {
        term: InMemoryTerm,
        pieces: Arc<Mutex<Vec<String>>>,
        /// The width the board is told, when the terminal narrowed after it
        /// was made (`None`: the in-memory terminal's own).
        narrowed: Arc<Mutex<Option<u16>>>,
    }

    impl Screen {
        fn new(rows: u16, columns: u16) -> Self {
            Self {
                term: InMemoryTerm::new(rows, columns),
                pieces: Arc::default(),
                narrowed: Arc::default(),
            }
        }

        /// A printer whose board and lines go to this screen.
        fn printer(&self, verbosity: Verbosity, colour: bool) -> Printer {
            Printer::build(
                verbosity,
                colour,
                false,
                false,
                Some(ProgressDrawTarget::term_like(Box::new(self.clone()))),
                Out::Term(Box::new(self.term.clone())),
            )
        }

        fn contents(&self) -> String {
            self.term.contents()
        }

        /// The widest piece of text the board wrote, in columns (colours left out).
        fn widest_piece(&self) -> usize {
            let pieces = self.pieces.lock().unwrap();
            pieces
                .iter()
                .map(|piece| console::measure_text_width(piece))
                .max()
                .unwrap_or_default()
        }

        fn written(&self, piece: &str) {
            if !piece.trim().is_empty() {
                self.pieces.lock().unwrap().push(piece.to_string());
            }
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            self.narrowed.lock().unwrap().unwrap_or_else(|| self.term.width())
        }
        fn height(&self) -> u16 {
            self.term.height()
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.term.move_cursor_up(n)
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.term.move_cursor_down(n)
        }
        fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
            self.term.move_cursor_right(n)
        }
        fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
            self.term.move_cursor_left(n)
        }
        fn write_line(&self, line: &str) -> std::io::Result<()> {
            self.written(line);
            self.term.write_line(line)
        }
        fn write_str(&self, text: &str) -> std::io::Result<()> {
            self.written(text);
            self.term.write_str(text)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.term.clear_line()
        }
        fn flush(&self) -> std::io::Result<()> {
            self.term.flush()
        }
    }

    fn colour_with(choice: Colour, variables: &[(&str, &str)], terminal: bool) -> bool {
        let variable = |name: &str| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_string())
        };
        colour_on(choice, variable, terminal)
    }

    #[test]
    fn colour_follows_the_flag_then_no_color_then_clicolor_force_then_the_terminal() {
        // --color wins over every variable.
        assert!(colour_with(Colour::Always, &[("NO_COLOR", "1")], false));
        assert!(!colour_with(Colour::Never, &[("CLICOLOR_FORCE", "1")], true));
        // auto: a terminal, unless NO_COLOR, a dumb terminal or CI.
        assert!(colour_with(Colour::Auto, &[], true));
        assert!(!colour_with(Colour::Auto, &[], false));
        assert!(!colour_with(Colour::Auto, &[("NO_COLOR", "1")], true));
        assert!(
            colour_with(Colour::Auto, &[("NO_COLOR", "")], true),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour_with(Colour::Auto, &[("TERM", "dumb")], true));
        assert!(!colour_with(Colour::Auto, &[("CI", "true")], true));
        assert!(colour_with(Colour::Auto, &[("CI", "false")], true));
        // CLICOLOR_FORCE turns it on off a terminal, but not over NO_COLOR.
        assert!(colour_with(Colour::Auto, &[("CLICOLOR_FORCE", "1")], false));
        assert!(!colour_with(Colour::Auto, &[("CLICOLOR_FORCE", "0")], false));
        assert!(!colour_with(
            Colour::Auto,
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
            false
        ));
        // A CI that shows colours gets them, its log being no terminal.
        for ci in ["GITHUB_ACTIONS", "GITLAB_CI"] {
            assert!(
                colour_with(Colour::Auto, &[("CI", "true"), (ci, "true")], false),
                "{ci}"
            );
            assert!(!colour_with(
                Colour::Auto,
                &[("CI", "true"), (ci, "true"), ("NO_COLOR", "1")],
                false
            ));
        }
    }

    const LONG: &str = "2 of 3 updated replicas are available, 1 old replica is pending termination";

    #[test]
    fn annotations_escape_as_the_actions_toolkit_does() {
        assert_eq!(
            annotation_line(
                "pipeline.toml",
                Some(3),
                Some(9),
                "site[0].path: 100% wrong\nsee docs"
            ),
            "::error file=pipeline.toml,line=3,col=9,title=berth::site[0].path: 100%25 wrong%0Asee docs"
        );
        assert_eq!(
            annotation_line("a,b:c.toml", None, None, "cannot read"),
            "::error file=a%2Cb%3Ac.toml,title=berth::cannot read"
        );
    }

    #[test]
    fn board_line_is_one_line() {
        assert_eq!(
            board_line("www-en", "deploy", "waiting\nfor\tpods\r"),
            "www-en         deploy   waiting for pods "
        );
    }

    #[test]
    fn board_lines_are_cut_to_the_terminal_width() {
        for columns in [20, 40, 60, 200] {
            for colour in [false, true] {
                let screen = Screen::new(10, columns);
                let printer = screen.printer(Verbosity::Normal, colour);
                printer.progress("www-en", "deploy", LONG);
                printer.progress("docs", "push", LONG);
                let full = [
                    board_line("docs", "push", LONG),
                    board_line("www-en", "deploy", LONG),
                ];
                let expected: Vec<String> = full
                    .iter()
                    .map(|line| line.chars().take(usize::from(columns)).collect::<String>())
                    .map(|line| line.trim_end().to_string())
                    .collect();
                assert_eq!(screen.contents(), expected.join("\n"), "{columns} columns");
                assert!(screen.widest_piece() <= usize::from(columns), "{columns} columns");
            }
        }
    }

    #[test]
    fn board_lines_follow_a_terminal_that_narrows() {
        let screen = Screen::new(10, 80);
        let printer = screen.printer(Verbosity::Normal, false);
        printer.progress("www-en", "deploy", LONG);
        assert!(screen.widest_piece() > 30);
        *screen.narrowed.lock().unwrap() = Some(30);
        screen.pieces.lock().unwrap().clear();
        printer.progress("www-en", "deploy", &format!("{LONG}, still"));
        printer.progress("docs", "push", LONG);
        // Every line drawn since is cut to the new width: none wraps.
        assert!(screen.widest_piece() <= 30, "{:?}", screen.pieces.lock().unwrap());
        assert!(screen.widest_piece() > 0);
    }

    #[test]
    fn board_line_is_dim_in_colour() {
        let screen = Screen::new(10, 40);
        screen
            .printer(Verbosity::Normal, true)
            .progress("www-en", "deploy", "waiting");
        let pieces = screen.pieces.lock().unwrap();
        assert!(
            pieces
                .iter()
                .any(|piece| piece.starts_with("\x1b[2m") && piece.ends_with("\x1b[0m")),
            "{pieces:?}"
        );
    }

    #[test]
    fn lines_go_above_the_board_and_the_board_redraws_clean() {
        let screen = Screen::new(20, 30);
        let printer = screen.printer(Verbosity::Normal, false);
        printer.progress("www-en", "build", LONG);
        printer.progress("docs", "mirror", LONG);
        printer.progress("www-en", "build", "step 2");
        printer.note("a note longer than the thirty columns, which wraps");
        printer.progress("docs", "mirror", "3 of 7 objects");
        printer.stage("www-en", "build", Status::Done, "a801302c5f31 (2.1s)");
        printer.warning("careful");
        assert_eq!(
            screen.contents(),
            [
                "a note longer than the thirty",
                "columns, which wraps",
                "www-en         build    ok   a",
                "801302c5f31 (2.1s)",
                "warning: careful",
                "docs           mirror   3 of 7",
            ]
            .join("\n")
        );
        printer.clear_progress("docs");
        printer.note("done");
        assert!(
            screen.contents().ends_with("warning: careful\ndone"),
            "{}",
            screen.contents()
        );
        assert!(screen.widest_piece() <= 30);
    }

    #[test]
    fn logs_go_above_the_board() {
        let screen = Screen::new(10, 40);
        let printer = screen.printer(Verbosity::Normal, false);
        printer.progress("www-en", "deploy", "waiting");
        let mut log = printer.log_writer();
        log.write_all(b"DEBUG berth: a log line\n").unwrap();
        assert_eq!(
            screen.contents(),
            "DEBUG berth: a log line\nwww-en         deploy   waiting"
        );
    }

    #[test]
    fn quiet_keeps_the_board_empty() {
        let screen = Screen::new(10, 40);
        let printer = screen.printer(Verbosity::Quiet, false);
        printer.progress("www-en", "deploy", "waiting");
        printer.stage("www-en", "deploy", Status::Done, "rolled out");
        assert_eq!(screen.contents(), "");
    }

    #[test]
    fn verbose_board_shows_started_lines_too() {
        let screen = Screen::new(10, 60);
        let printer = screen.printer(Verbosity::Verbose, false);
        printer.stage("www-en", "deploy", Status::Started, "setting the image");
        printer.progress("www-en", "deploy", "waiting");
        assert_eq!(
            screen.contents(),
            "www-en         deploy   ..   setting the image\nwww-en         deploy   waiting"
        );
    }
}
