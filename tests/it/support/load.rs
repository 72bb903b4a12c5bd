//! A bounded HTTP load on one address (a ClusterIP from the host), for the
//! zero-downtime tests: clients that each send one GET at a time, on a new
//! connection, until the test stops them. A load that ends by its own time
//! limit before the test stops it did not outlast what it was meant to
//! watch: [`Load::stop`] fails the test then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::http_get_at;

/// What a [`Load`] asks, how many clients ask it at once, and how often.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub path: &'static str,
    pub clients: usize,
    /// Client `i` sends its first request `i × stagger` after the start.
    pub stagger: Duration,
    /// The pause of each client between two requests.
    pub interval: Duration,
    /// How long one request may take (to connect, and between reads).
    pub timeout: Duration,
    /// A safety net: the clients stop by themselves after this, and
    /// [`Load::stop`] then fails the test (the load ended before the test
    /// said so).
    pub limit: Duration,
}

impl LoadPlan {
    /// Pages: 4 clients each asking `/` every 5 ms. Measured on the stack's
    /// 2-core machine with one busy loop on a core: 99 % of the pages take
    /// under 50 ms and the slowest 100–230 ms; with three busy loops and
    /// other tests running, 99 % under 150 ms and the slowest 290–330 ms. A
    /// request is a failure after 10 s without an answer, 30 times that: a
    /// slow machine makes no false failure. A real one is not hidden by
    /// it: a stopping pod refuses or resets at once, and a connection to a
    /// pod that is gone times out whatever the limit.
    pub fn pages() -> Self {
        Self {
            path: "/",
            clients: 4,
            stagger: Duration::ZERO,
            interval: Duration::from_millis(5),
            timeout: Duration::from_secs(10),
            limit: Duration::from_secs(300),
        }
    }
}

/// A running load ([`Load::start`]).
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    limit: Duration,
    threads: Vec<std::thread::JoinHandle<Client>>,
}

/// What one client did.
struct Client {
    requests: usize,
    failures: Vec<String>,
    durations: Vec<Duration>,
    /// It stopped by its time limit, not because the test stopped it.
    ran_out: bool,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct LoadResult {
    pub requests: usize,
    /// One line per failed request: what went wrong.
    pub failures: Vec<String>,
    /// How long the load ran, from its start until the test stopped it.
    pub ran_for: Duration,
    /// The slowest request (answered or not).
    pub slowest: Duration,
    /// 99 % of the requests took at most this.
    pub p99: Duration,
}

impl LoadResult {
    /// The failures by what went wrong, most frequent first: `: 40 × refused, 2 × timed out`.
    pub fn failure_kinds(&self) -> String {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for failure in &self.failures {
            // "Connection refused (os error 111) (after 0.0s)": the words before the first bracket.
            let kind = failure.split(" (").next().unwrap_or(failure).to_string();
            *kinds.entry(kind).or_default() += 1;
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        if kinds.is_empty() {
            return String::new();
        }
        let listed: Vec<String> = kinds
            .iter()
            .map(|(kind, count)| format!("{count} × {kind}"))
            .collect();
        format!(": {}", listed.join(", "))
    }
}

impl Load {
    pub fn start(address: std::net::SocketAddr, plan: &LoadPlan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = (0..plan.clients)
            .map(|client| {
                let (stop, plan) = (stop.clone(), plan.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(plan.stagger * u32::try_from(client).unwrap_or(0));
                    let mut done = Client {
                        requests: 0,
                        failures: Vec::new(),
                        durations: Vec::new(),
                        ran_out: false,
                    };
                    while !stop.load(Ordering::SeqCst) {
                        if started.elapsed() >= plan.limit {
                            done.ran_out = true;
                            break;
                        }
                        done.requests += 1;
                        let asked = Instant::now();
                        let answer = http_get_at(address, plan.path, plan.timeout);
                        done.durations.push(asked.elapsed());
                        match answer {
                            Ok((200, _)) => {}
                            Ok((status, _)) => done.failures.push(format!("answered {status}")),
                            Err(error) => done
                                .failures
                                .push(format!("{error} (after {:.1}s)", asked.elapsed().as_secs_f64())),
                        }
                        std::thread::sleep(plan.interval);
                    }
                    done
                })
            })
            .collect();
        Self {
            stop,
            started,
            limit: plan.limit,
            threads,
        }
    }

    /// Stops the clients and says what they saw. Fails the test when a
    /// client had stopped by its time limit already: the load did not last
    /// as long as the test needed it.
    pub fn stop(self) -> LoadResult {
        let ran_for = self.started.elapsed();
        self.stop.store(true, Ordering::SeqCst);
        let clients: Vec<Client> = self
            .threads
            .into_iter()
            .map(|thread| thread.join().expect("load thread"))
            .collect();
        let ran_out = clients.iter().filter(|client| client.ran_out).count();
        assert_eq!(
            ran_out,
            0,
            "{ran_out} of {} load clients stopped at their limit of {:?} before the test stopped them \
             after {ran_for:?}: the load did not outlast what it watched",
            clients.len(),
            self.limit
        );
        let mut durations: Vec<Duration> = clients
            .iter()
            .flat_map(|client| client.durations.iter().copied())
            .collect();
        durations.sort();
        let p99 = durations
            .get(durations.len().saturating_mul(99) / 100)
            .copied()
            .unwrap_or_default();
        let result = LoadResult {
            requests: clients.iter().map(|client| client.requests).sum(),
            failures: clients.into_iter().flat_map(|client| client.failures).collect(),
            ran_for,
            slowest: durations.last().copied().unwrap_or_default(),
            p99,
        };
        eprintln!(
            "load: {} requests over {:.1}s until stopped; slowest {:.0} ms, 99% within {:.0} ms; {} failed{}",
            result.requests,
            result.ran_for.as_secs_f64(),
            result.slowest.as_secs_f64() * 1000.0,
            result.p99.as_secs_f64() * 1000.0,
            result.failures.len(),
            result.failure_kinds()
        );
        result
    }
}
