//! The site's generator: its build command run with `sh -c` in the exported
//! folder, with a clean, documented environment; its last lines are kept for
//! the failure message, and shown as they come with `-v`.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::image::BuildError;
use crate::ui::Printer;

pub(crate) fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast lines of the build:\n{tail}")
    }
}

/// Keeps the last `capacity` lines of some output.
pub(crate) struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Tail {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, line: &str) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.trim_end().to_string());
    }

    pub(crate) fn text(&self) -> String {
        self.lines
            .iter()
            .map(|line| format!("  | {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `command` with `sh -c` in `directory`.
///
/// The environment is cleared except `PATH`; berth sets `HOME` (a fresh folder),
/// `LANG=C.UTF-8`, `TZ=UTC`, `SOURCE_DATE_EPOCH` (the commit time),
/// `BERTH_COMMIT` and `BERTH_REPO`, so a build depends on the commit, not on
/// whoever runs it.
#[expect(
    clippy::too_many_arguments,
    reason = "the command, where it runs, and what it is told"
)]
pub async fn run_generator(
    command: &str,
    directory: &Path,
    home: &Path,
    commit: &str,
    commit_time: i64,
    repo: &str,
    env: &std::collections::BTreeMap<String, String>,
    printer: &Printer,
) -> Result<(), BuildError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(directory)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", commit_time.to_string())
        .env("BERTH_COMMIT", commit)
        .env("BERTH_REPO", repo)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BuildError::Spawn {
            command: command.to_string(),
            error: source,
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut tail = Tail::new(20);
    let mut out_lines = BufReader::new(stdout).lines();
    let mut err_lines = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            line = out_lines.next_line(), if out_open => match line {
                Ok(Some(line)) => { printer.detail(&line); tail.push(&line); }
                _ => out_open = false,
            },
            line = err_lines.next_line(), if err_open => match line {
                Ok(Some(line)) => { printer.detail(&line); tail.push(&line); }
                _ => err_open = false,
            },
        }
    }
    let status = child.wait().await.map_err(|source| BuildError::Spawn {
        command: command.to_string(),
        error: source,
    })?;
    if status.success() {
        Ok(())
    } else {
        let status = status.code().map_or_else(
            || "killed by a signal".to_string(),
            |code| format!("exit code {code}"),
        );
        Err(BuildError::Command {
            command: command.to_string(),
            status,
            tail: tail.text(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::new(2);
        for line in ["a", "b", "c"] {
            tail.push(line);
        }
        assert_eq!(tail.text(), "  | b\n  | c");
    }
}
