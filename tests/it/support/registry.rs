//! Registries of a test's own, each a [`Background`] process on a free
//! loopback port, stopped when dropped: Debian's `docker-registry` (with or
//! without deletes), and `tests/fixtures/flaky-registry-proxy.py` in front
//! of the stack's registry, answering 500 on purpose.

use std::process::Command;
use std::time::Duration;

use super::{Background, free_port, http_get, repo_root, wait_for_port};

/// A distribution registry of a test's own (Debian's `docker-registry`),
/// its storage in a folder of its own.
pub struct OwnRegistry {
    /// `127.0.0.1:PORT`
    pub address: String,
    pub port: u16,
    process: Background,
    _storage: tempfile::TempDir,
}

impl OwnRegistry {
    /// Started, and answering `GET /v2/` (at most 10 s). `deletes`: whether
    /// it allows manifest deletes (`storage.delete.enabled`).
    pub fn start(deletes: bool) -> Self {
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: {deletes}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let process = Background::start(Command::new("docker-registry").arg("serve").arg(&config));
        let registry = Self {
            address: format!("127.0.0.1:{port}"),
            port,
            process,
            _storage: storage,
        };
        for _ in 0..100 {
            if registry.answers() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the registry of this test does not answer on {}",
            registry.address
        );
    }

    /// Whether it answers `GET /v2/` with 200 now.
    pub fn answers(&self) -> bool {
        http_get(self.port, "/v2/").is_ok_and(|(status, _)| status == 200)
    }

    /// Kills it and waits until it is gone: nothing listens on its port after.
    pub fn kill(&mut self) {
        self.process.stop();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the killed registry still accepts connections on {}",
            self.address
        );
    }
}

/// `tests/fixtures/flaky-registry-proxy.py` in front of a registry: it
/// answers 500 to the first `count` requests with `method` whose path holds
/// `part` (-1: every one), passes everything else through, and records each
/// request ([`FlakyRegistry::requests`]).
pub struct FlakyRegistry {
    /// `127.0.0.1:PORT`
    pub address: String,
    _process: Background,
    log: tempfile::NamedTempFile,
}

impl FlakyRegistry {
    /// Answers 500 to the first `count` manifest PUTs (-1: every one) on
    /// the way to `upstream` (`host:port`).
    pub fn failing_manifest_puts(upstream: &str, count: i32) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let process = Background::start(
            Command::new("python3")
                .arg(repo_root().join("tests/fixtures/flaky-registry-proxy.py"))
                .args([
                    &port.to_string(),
                    upstream,
                    "PUT",
                    "/manifests/",
                    &count.to_string(),
                ])
                .arg(log.path()),
        );
        wait_for_port(port);
        Self {
            address: format!("127.0.0.1:{port}"),
            _process: process,
            log,
        }
    }

    /// Passes every request on to `upstream`, answering none itself.
    pub fn passing_to(upstream: &str) -> Self {
        Self::failing_manifest_puts(upstream, 0)
    }

    /// The requests it answered so far, one `METHOD PATH STATUS USER-AGENT` each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many times the Docker Engine began to talk to the registry here
    /// (a push, a pull, an inspect): each begins with its own `GET /v2/`.
    /// berth's own requests name berth as their agent, and do not count.
    pub fn engine_sessions(&self) -> usize {
        self.requests()
            .iter()
            .filter(|line| line.starts_with("GET /v2/ ") && line.contains(" docker/"))
            .count()
    }
}
