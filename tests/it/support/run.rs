//! The one way the tests run the real `berth` binary: a [`Berth`] built up
//! fluently (arguments, environment, folder), then run to its end
//! ([`Berth::succeeds`], [`Berth::fails_with`], [`Berth::json`], [`Berth::run`])
//! or started ([`Berth::spawn`], [`Berth::spawn_until`]) to be watched line by
//! line, interrupted or killed. Every failed assertion prints the command, its
//! exit code, its stdout and its stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`Berth::spawn_until`] waits for its line: longer than any
/// mirror, build and push of the tests' sites on a loaded 2-core machine.
pub const SPAWN_DEADLINE: Duration = Duration::from_secs(180);

/// One run of the real `berth` binary, as a test runs it: no colour, `CI`
/// set (plain lines), none of the developer's `BERTH_*` variables.
#[must_use = "a Berth runs only when asked: .succeeds(), .fails_with(..), .run(), .spawn()..."]
#[derive(Debug, Clone)]
pub struct Berth {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
}

impl Berth {
    /// `berth ARGS...`, in the test process's folder until [`Berth::in_dir`].
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self {
            args: args.into_iter().map(|arg| arg.as_ref().to_owned()).collect(),
            env: Vec::new(),
            dir: None,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// The variable `key` set to `value` for this run only.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Each `(key, value)` set for this run only.
    pub fn envs<I, K, V>(self, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        pairs
            .into_iter()
            .fold(self, |berth, (key, value)| berth.env(key, value))
    }

    /// The variable `key` left out (`NO_COLOR` and `CI`, which every run sets, too).
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Runs in `dir`.
    pub fn in_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The process to start.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env("CI", "true")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("GITHUB_ACTIONS");
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        // A developer's BERTH_* variables (every global option has one) stay out.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("BERTH_") && !name_text.starts_with("BERTH_STACK_") {
                command.env_remove(&name);
            }
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    /// The command as a person would type it, with the names of the
    /// variables it sets (not their values: some are secrets).
    fn line(&self) -> String {
        let mut line = String::from("berth");
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        let set: Vec<String> = self
            .env
            .iter()
            .map(|(key, value)| match value {
                Some(_) => key.to_string_lossy().to_string(),
                None => format!("-{}", key.to_string_lossy()),
            })
            .collect();
        if !set.is_empty() {
            line.push_str(&format!("  (environment: {})", set.join(", ")));
        }
        line
    }

    /// Runs to the end, whatever the exit code.
    pub fn run(self) -> Ran {
        let output = self
            .command()
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.line()));
        Ran {
            line: self.line(),
            output,
        }
    }

    /// Runs to the end and asserts it exited [`crate::support::exit::OK`].
    pub fn succeeds(self) -> Ran {
        self.run().exited(berth::exit::OK)
    }

    /// Runs to the end and asserts it exited `code` (a constant of `berth::exit`).
    pub fn fails_with(self, code: u8) -> Ran {
        assert_ne!(code, berth::exit::OK, "fails_with(OK): use .succeeds()");
        self.run().exited(code)
    }

    /// Runs to the end, asserts success, and returns its `--json` document.
    pub fn json(self) -> serde_json::Value {
        self.succeeds().json()
    }

    /// Starts berth without waiting for it; its stdout and stderr are read
    /// as they come (see [`Running`]).
    pub fn spawn(self) -> Running {
        let line = self.line();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {line}: {error}"));
        let (sender, lines) = std::sync::mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            read_lines(
                child.stdout.take().unwrap(),
                Stream::Stdout,
                &stdout,
                sender.clone(),
            ),
            read_lines(child.stderr.take().unwrap(), Stream::Stderr, &stderr, sender),
        ];
        Running {
            line,
            child: Some(child),
            lines,
            stdout,
            stderr,
            readers,
        }
    }

    /// Starts berth and returns once a line of its stderr holds `needle`
    /// (within [`SPAWN_DEADLINE`]); the rest is read as it comes.
    pub fn spawn_until(self, needle: &str) -> Running {
        let mut running = self.spawn();
        running.wait_for(needle, SPAWN_DEADLINE);
        running
    }
}

/// Which of berth's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// A thread that reads `from` line by line into `into`, telling `sender` each line.
fn read_lines(
    from: impl Read + Send + 'static,
    stream: Stream,
    into: &Arc<Mutex<Vec<u8>>>,
    sender: Sender<(Stream, String)>,
) -> std::thread::JoinHandle<()> {
    let into = into.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    into.lock().unwrap().extend_from_slice(&line);
                    // The receiver may be gone (the test stopped listening).
                    let _ = sender.send((stream, String::from_utf8_lossy(&line).to_string()));
                }
            }
        }
    })
}

/// A berth started by [`Berth::spawn`]: its lines are read as they come;
/// killed when dropped, so a failing test leaves nothing running.
pub struct Running {
    line: String,
    child: Option<Child>,
    lines: Receiver<(Stream, String)>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("berth is running").id()
    }

    /// Waits (at most `within`) until a line of berth's stderr holds
    /// `needle`; returns that line. Panics with everything read so far when
    /// berth ends first or the time is up.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        self.wait_for_line(Stream::Stderr, needle, within)
    }

    /// The same on stdout.
    pub fn wait_for_stdout(&mut self, needle: &str, within: Duration) -> String {
        self.wait_for_line(Stream::Stdout, needle, within)
    }

    fn wait_for_line(&mut self, stream: Stream, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((from, line)) if from == stream && line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} never said {needle:?} ({stream:?}) within {within:?}:\n{}",
                    self.line,
                    self.so_far()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|child| child.wait().ok());
                    panic!(
                        "{} ended ({status:?}) without saying {needle:?} ({stream:?}):\n{}",
                        self.line,
                        self.so_far()
                    )
                }
            }
        }
    }

    /// What berth wrote so far: stdout, then stderr.
    pub fn so_far(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            String::from_utf8_lossy(&self.stdout.lock().unwrap()),
            String::from_utf8_lossy(&self.stderr.lock().unwrap())
        )
    }

    /// What berth wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).to_string()
    }

    /// Whether berth has not exited yet.
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("berth was started");
        child.try_wait().expect("ask berth's state").is_none()
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL: berth stops at once, without cleaning up.
    pub fn kill(&self) {
        self.signal("-KILL");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.line);
    }

    /// Waits for berth to exit and for all of its output.
    pub fn wait(mut self) -> Ran {
        let status: ExitStatus = self
            .child
            .take()
            .expect("berth was started")
            .wait()
            .expect("wait for berth");
        for reader in self.readers.drain(..) {
            reader.join().expect("an output reader");
        }
        let output = Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        Ran {
            line: std::mem::take(&mut self.line),
            output,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished run of berth: its exit code and output, and assertions on
/// them that print all of it when they fail.
pub struct Ran {
    line: String,
    output: Output,
}

impl Ran {
    /// The exit code (`None`: ended by a signal).
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).to_string()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).to_string()
    }

    /// stdout, then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Whether the exit code is `code` (a constant of `berth::exit`).
    pub fn exit_is(&self, code: u8) -> bool {
        self.code() == Some(i32::from(code))
    }

    /// Asserts the exit code is `code` (a constant of `berth::exit`).
    pub fn exited(self, code: u8) -> Self {
        assert!(self.exit_is(code), "expected exit code {code}:\n{self}");
        self
    }

    /// The `--json` document on stdout, checked against nothing.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{self}"))
    }

    /// Asserts stdout or stderr holds `needle`.
    pub fn has(self, needle: &str) -> Self {
        assert!(
            self.all().contains(needle),
            "the output lacks {needle:?}:\n{self}"
        );
        self
    }

    /// Asserts stdout or stderr holds each of `needles`.
    pub fn has_all(self, needles: &[&str]) -> Self {
        needles.iter().fold(self, |ran, needle| ran.has(needle))
    }

    /// Asserts neither stdout nor stderr holds `needle`.
    pub fn lacks(self, needle: &str) -> Self {
        assert!(
            !self.all().contains(needle),
            "the output holds {needle:?}:\n{self}"
        );
        self
    }

    /// Asserts stdout holds `needle`.
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(self.stdout().contains(needle), "stdout lacks {needle:?}:\n{self}");
        self
    }

    /// Asserts stderr holds `needle`.
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(self.stderr().contains(needle), "stderr lacks {needle:?}:\n{self}");
        self
    }
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
            self.line,
            self.output
                .status
                .code()
                .map_or_else(|| format!("{}", self.output.status), |code| code.to_string()),
            self.stdout(),
            self.stderr()
        )
    }
}

impl fmt::Debug for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
