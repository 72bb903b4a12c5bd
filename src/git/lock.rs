//! The mirror's lock: a file lock with a bounded wait that names its holder
//! (host and process), so two berth processes never fetch one mirror at once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::git::{LocalProblem, MirrorError};

/// How long a second process waits for a mirror's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Takes `<name>.lock` with a bounded wait; the file says who holds it.
pub(super) fn lock(dir: &Path, name: &str) -> Result<File, MirrorError> {
    let path = dir.join(format!("{name}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| MirrorError::Local {
            repo: name.to_string(),
            problem: LocalProblem::File {
                action: "open",
                path: path.clone(),
                error,
            },
        })?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= LOCK_WAIT {
                    let mut holder = String::new();
                    let _ = File::open(&path).and_then(|mut f| f.read_to_string(&mut holder));
                    let holder = if holder.trim().is_empty() {
                        "another process".to_string()
                    } else {
                        holder.trim().to_string()
                    };
                    return Err(MirrorError::Locked {
                        repo: name.to_string(),
                        holder,
                        waited: started.elapsed(),
                        path,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(MirrorError::Local {
                    repo: name.to_string(),
                    problem: LocalProblem::File {
                        action: "lock",
                        path,
                        error,
                    },
                });
            }
        }
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "berth pid {} on {}", std::process::id(), hostname());
    Ok(file)
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this machine".into(), |name| name.trim().to_string())
}
