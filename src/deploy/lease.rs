//! A per-Deployment lock held as a `coordination.k8s.io/v1` Lease, and the
//! fence that stops berth acting on the Deployment once it no longer holds it.
//!
//! 1. Acquire: create `berth-<deployment>` in the Deployment's namespace, or take
//!    it over when it is free or its holder stopped renewing it (expired); every
//!    write carries the read `resourceVersion`, so two takers never both win.
//!    Expiry is decided as client-go's leader election decides it, by this
//!    process's monotonic clock and never by the times another host wrote
//!    ([`expires_in`]): a held lease whose record (holder, `renewTime`,
//!    `resourceVersion`) has not changed for `leaseDurationSeconds` since berth
//!    first saw it so is expired, one that keeps changing is alive, whatever
//!    its recorded times say (clock skew).
//! 2. While the holder is alive, wait (bounded), saying who holds it; past the
//!    bound, fail naming the holder.
//! 3. Renew in the background every third of the lease's duration, retrying a
//!    failed renewal every [`RETRY`]. The lock is **lost** when the lease names
//!    another holder (or is gone), or when no renewal succeeded for
//!    [`RENEW_DEADLINE`] (two thirds of the lease's duration, by the local
//!    clock, so berth stops before another caller may see the lease expire).
//!    [`LeaseLock::check`] says so before each write to the Deployment, and
//!    [`LeaseLock::lost`] ends a wait early ([`DeployError::LostLock`]).
//! 4. Release by clearing the holder, so the next caller need not wait for
//!    expiry; a lease another caller holds is left alone.
//!
//! The lease outlives its holders, so it also keeps berth's record of its
//! Deployment: annotations set by the holder ([`LeaseLock::annotate`]), read by
//! anyone ([`annotations_of`]), that change nothing in the Deployment itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::watch;

use super::DeployError;
use crate::config::DeploymentTarget;

/// How long a lease lives without renewal: a crashed holder blocks others this long at most.
pub const LEASE_SECONDS: i32 = 30;
/// How long berth goes on without a successful renewal before it calls the
/// lock lost: two thirds of [`LEASE_SECONDS`], so it stops acting before a
/// caller that watches the lease may take it.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(20);
/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// A held lease; renewal stops and the lease is released by [`LeaseLock::release`].
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The Deployment the lease locks, for [`DeployError::LostLock`].
    target: (String, String),
    renewal: tokio::task::JoinHandle<()>,
    /// What the renewal task knows: when it last renewed, and the loss it saw.
    state: watch::Receiver<Renewal>,
    /// An image that passed, recorded on the lease by the write that frees it.
    passed: std::sync::Mutex<Option<super::Passed>>,
}

/// Who holds a lease that berth could not take.
#[derive(Debug, Clone)]
pub struct Holder {
    pub identity: String,
    pub expires_in: Duration,
}

/// How berth lost a lock it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// The lease names another holder (or none: someone else cleared it).
    #[error("{}", held_by(.0))]
    HeldBy(String),
    /// The lease was deleted.
    #[error("its lease was deleted")]
    Deleted,
    /// No renewal succeeded for this long (the API server unreachable, or refusing).
    #[error("no renewal of its lease succeeded for {0:.0?}")]
    NotRenewed(Duration),
}

fn held_by(holder: &str) -> String {
    if holder.is_empty() {
        "its lease was freed by another caller".into()
    } else {
        format!("its lease is held by {holder} now")
    }
}

/// The renewal task's news.
#[derive(Debug, Clone)]
struct Renewal {
    /// When the request of the last successful renewal (or of the take) was sent.
    renewed: Instant,
    lost: Option<Loss>,
}

impl Renewal {
    /// The loss at `now`: the one seen, or a renewal overdue.
    fn loss(&self, now: Instant) -> Option<Loss> {
        self.lost.clone().or_else(|| {
            let since = now.saturating_duration_since(self.renewed);
            (since >= RENEW_DEADLINE).then_some(Loss::NotRenewed(since))
        })
    }
}

pub fn lease_name(target: &DeploymentTarget) -> String {
    let name = format!("berth-{}", target.name);
    name[..name.len().min(253)].to_string()
}

/// This process's identity: host, pid and a random part.
pub fn identity(purpose: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown-host".into(), |h| h.trim().to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "berth {purpose} on {host}, pid {} ({nanos:x})",
        std::process::id()
    )
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// What berth compares of a lease to tell whether its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    renew_time: Option<String>,
    resource_version: Option<String>,
    duration: Duration,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        let seconds = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS);
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
            duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        }
    }
}

/// A record as this process saw it, and since when (its own clock) unchanged.
#[derive(Debug, Clone)]
struct Observed {
    record: Record,
    since: Instant,
}

/// `record`, seen at `now`, after `previous`: unchanged keeps the instant it
/// was first seen so, changed starts again from `now` (client-go's
/// `observedTime`).
fn observe(previous: Option<Observed>, record: Record, now: Instant) -> Observed {
    match previous {
        Some(previous) if previous.record == record => previous,
        _ => Observed { record, since: now },
    }
}

/// Time left at `now` before the observed lease expires; zero when it is free
/// or expired. Only this process's clock counts: a holder is alive while its
/// record changes within its lease's duration, whatever times it recorded.
fn expires_in(observed: &Observed, now: Instant) -> Duration {
    if observed.record.holder.is_empty() {
        return Duration::ZERO;
    }
    (observed.since + observed.record.duration).saturating_duration_since(now)
}

/// Takes the lease of `target`, waiting at most `wait` for another holder.
/// `on_wait` is told once who holds it while berth waits.
pub async fn acquire(
    client: &kube::Client,
    target: &DeploymentTarget,
    identity: &str,
    wait: Duration,
    on_wait: &(dyn Fn(&Holder) + Sync),
) -> Result<LeaseLock, DeployError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
    let name = lease_name(target);
    let started = Instant::now();
    let mut told = false;
    let mut observed: Option<Observed> = None;
    let refused = |verb: &'static str, error: kube::Error| {
        super::api_error(error, verb, "leases", &target.namespace, &name)
    };
    let taken = loop {
        match api.get_opt(&name).await.map_err(|e| refused("get", e))? {
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "berth"}},
                    "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS, "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0}
                }))
                .expect("a valid lease");
                let sent = Instant::now();
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => break sent,
                    Err(kube::Error::Api(response)) if response.code == 409 => {}
                    Err(error) => return Err(refused("create", error)),
                }
            }
            Some(mut lease) => {
                let seen = observe(observed.take(), Record::of(&lease), Instant::now());
                let left = expires_in(&seen, Instant::now());
                let holder = seen.record.holder.clone();
                observed = Some(seen);
                if left.is_zero() || holder == identity {
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    if holder != identity {
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                    spec.holder_identity = Some(identity.to_string());
                    spec.lease_duration_seconds = Some(LEASE_SECONDS);
                    spec.acquire_time = Some(now());
                    spec.renew_time = Some(now());
                    let sent = Instant::now();
                    match api.replace(&name, &PostParams::default(), &lease).await {
                        Ok(_) => break sent,
                        Err(kube::Error::Api(response)) if response.code == 409 => continue,
                        Err(error) => return Err(refused("update", error)),
                    }
                }
                let holder = Holder {
                    identity: holder,
                    expires_in: left,
                };
                if started.elapsed() >= wait {
                    return Err(DeployError::Locked {
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                        holder: holder.identity,
                        waited: started.elapsed(),
                    });
                }
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                let pause = left.min(Duration::from_secs(1)).max(Duration::from_millis(200));
                tokio::time::sleep(
                    pause
                        .min(wait.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(50)),
                )
                .await;
            }
        }
    };
    let (sender, state) = watch::channel(Renewal {
        renewed: taken,
        lost: None,
    });
    let renewal = tokio::spawn(renew(api.clone(), name.clone(), identity.to_string(), sender));
    Ok(LeaseLock {
        api,
        name,
        identity: identity.to_string(),
        target: (target.namespace.clone(), target.name.clone()),
        renewal,
        state,
        passed: std::sync::Mutex::default(),
    })
}

/// Renews the lease until it is lost (then says so on `state` and stops) or
/// the task is aborted. A failed renewal is a warning and is tried again soon.
async fn renew(api: Api<Lease>, name: String, identity: String, state: watch::Sender<Renewal>) {
    let period = Duration::from_secs(u64::try_from(LEASE_SECONDS / 3).unwrap_or(10));
    let mut pause = period;
    loop {
        tokio::time::sleep(pause).await;
        pause = RETRY;
        let sent = Instant::now();
        let mut lease = match api.get_opt(&name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::warn!("lease {name} was deleted: berth lost the lock");
                state.send_modify(|s| s.lost = Some(Loss::Deleted));
                return;
            }
            Err(error) => {
                tracing::warn!("renewing lease {name} failed (reading it: {error}); trying again");
                continue;
            }
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != identity {
            tracing::warn!("lease {name} is held by {holder:?} now: berth lost the lock");
            state.send_modify(|s| s.lost = Some(Loss::HeldBy(holder)));
            return;
        }
        spec.renew_time = Some(now());
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => {
                state.send_modify(|s| s.renewed = sent);
                pause = period;
            }
            // Written in between (an annotation of ours, or another holder's
            // take): read again at once.
            Err(kube::Error::Api(response)) if response.code == 409 => pause = Duration::ZERO,
            Err(error) => tracing::warn!("renewing lease {name} failed: {error}; trying again"),
        }
    }
}

/// The annotations on the lease of `target`; none when it has no lease yet.
pub async fn annotations_of(
    client: &kube::Client,
    target: &DeploymentTarget,
) -> Result<BTreeMap<String, String>, DeployError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
    let name = lease_name(target);
    match api.get_opt(&name).await {
        Ok(lease) => Ok(lease.and_then(|l| l.metadata.annotations).unwrap_or_default()),
        Err(error) => Err(super::api_error(error, "get", "leases", &target.namespace, &name)),
    }
}

impl LeaseLock {
    /// Sets `annotations` on the lease while it is ours (reading it again when
    /// a renewal wrote in between).
    pub async fn annotate(&self, annotations: &BTreeMap<String, String>) -> Result<(), DeployError> {
        let refused = |error| super::api_error(error, "update", "leases", self.api_namespace(), &self.name);
        for _ in 0..5 {
            let mut lease = self.api.get(&self.name).await.map_err(refused)?;
            let holder = lease
                .spec
                .as_ref()
                .and_then(|spec| spec.holder_identity.as_deref());
            if holder != Some(self.identity.as_str()) {
                return Err(self.lost_lock(Loss::HeldBy(holder.unwrap_or_default().to_string()), None));
            }
            lease
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(annotations.clone());
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Err(kube::Error::Api(response)) if response.code == 409 => {}
                other => return other.map(|_| ()).map_err(refused),
            }
        }
        Err(DeployError::Conflict {
            verb: "update",
            resource: "leases",
            namespace: self.api_namespace().to_string(),
            name: self.name.clone(),
            message: "the lease kept changing (5 conflicts in a row)".into(),
        })
    }

    /// Whether berth still holds the lock, as far as it knows now: call it
    /// before each write to the Deployment. `Err` is [`DeployError::LostLock`].
    pub fn check(&self) -> Result<(), DeployError> {
        match self.state.borrow().loss(Instant::now()) {
            None => Ok(()),
            Some(loss) => Err(self.lost_lock(loss, None)),
        }
    }

    /// Resolves when the lock is lost (another holder seen, the lease gone, or
    /// a renewal overdue): to select on while berth waits.
    pub async fn lost(&self) -> Loss {
        let mut state = self.state.clone();
        loop {
            let deadline = {
                let renewal = state.borrow_and_update();
                if let Some(loss) = renewal.loss(Instant::now()) {
                    return loss;
                }
                renewal.renewed + RENEW_DEADLINE
            };
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        // The renewal task ended without a loss (aborted):
                        // only the deadline is left.
                        tokio::time::sleep_until(deadline.into()).await;
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// The error of `loss`; `set` is the image berth had set before it.
    pub fn lost_lock(&self, loss: Loss, set: Option<String>) -> DeployError {
        DeployError::LostLock {
            namespace: self.target.0.clone(),
            name: self.target.1.clone(),
            loss,
            set,
        }
    }

    fn api_namespace(&self) -> &str {
        self.api.namespace().unwrap_or_default()
    }

    /// Records `passed` ([`super::PASSED_ANNOTATION`]) with the write that
    /// frees the lease: no request of its own.
    pub fn record_passed_on_release(&self, passed: super::Passed) {
        *self.passed.lock().expect("not poisoned") = Some(passed);
    }

    /// Stops renewing and frees the lease (if still ours), recording the
    /// image that passed, if any.
    pub async fn release(self) {
        self.renewal.abort();
        for _ in 0..3 {
            let Ok(mut lease) = self.api.get(&self.name).await else {
                return;
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            if let Some(passed) = self.passed.lock().expect("not poisoned").clone() {
                super::add_passed(
                    lease.metadata.annotations.get_or_insert_with(BTreeMap::new),
                    passed,
                );
            }
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Err(kube::Error::Api(response)) if response.code == 409 => {}
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Loss, Observed, RENEW_DEADLINE, Record, Renewal, expires_in, observe};

    fn record(holder: &str, renew_time: &str, resource_version: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some(renew_time.into()),
            resource_version: Some(resource_version.into()),
            duration: Duration::from_secs(30),
        }
    }

    /// The record seen at each of `seen` seconds after `start`, folded.
    fn watched(start: Instant, seen: &[(u64, Record)]) -> Observed {
        seen.iter()
            .fold(None, |previous, (at, record)| {
                Some(observe(
                    previous,
                    record.clone(),
                    start + Duration::from_secs(*at),
                ))
            })
            .unwrap()
    }

    #[test]
    fn a_record_that_does_not_change_for_the_lease_duration_expires_whatever_its_times_say() {
        let start = Instant::now();
        // Renewed "in the future" by a clock ahead of this one, then never again.
        let future = record("crashed", "2099-01-01T00:00:00Z", "7");
        let seen = watched(
            start,
            &[(0, future.clone()), (10, future.clone()), (29, future.clone())],
        );
        assert_eq!(
            expires_in(&seen, start + Duration::from_secs(29)),
            Duration::from_secs(1)
        );
        assert_eq!(expires_in(&seen, start + Duration::from_secs(30)), Duration::ZERO);
        // First seen: a full lease duration left, even if renewed "long ago".
        let past = record("crashed", "2001-01-01T00:00:00Z", "7");
        let first = watched(start, &[(0, past)]);
        assert_eq!(expires_in(&first, start), Duration::from_secs(30));
    }

    #[test]
    fn a_record_that_keeps_changing_is_alive_even_with_times_in_the_past() {
        let start = Instant::now();
        let seen = watched(
            start,
            &[
                (0, record("runner", "2001-01-01T00:00:00Z", "7")),
                (20, record("runner", "2001-01-01T00:00:20Z", "8")),
                (40, record("runner", "2001-01-01T00:00:40Z", "9")),
            ],
        );
        assert_eq!(
            expires_in(&seen, start + Duration::from_secs(45)),
            Duration::from_secs(25)
        );
        // A new resourceVersion alone (an annotation written) is a change too.
        let seen = watched(
            start,
            &[
                (0, record("runner", "2001-01-01T00:00:00Z", "7")),
                (25, record("runner", "2001-01-01T00:00:00Z", "8")),
            ],
        );
        assert!(!expires_in(&seen, start + Duration::from_secs(50)).is_zero());
    }

    #[test]
    fn a_lease_without_a_holder_is_free_at_first_sight() {
        let start = Instant::now();
        let free = Record {
            holder: String::new(),
            renew_time: None,
            ..record("", "", "3")
        };
        assert_eq!(expires_in(&watched(start, &[(0, free)]), start), Duration::ZERO);
    }

    #[test]
    fn the_lock_is_lost_when_another_holder_was_seen_or_no_renewal_succeeded_in_time() {
        let renewed = Instant::now();
        let fine = Renewal { renewed, lost: None };
        assert_eq!(fine.loss(renewed + Duration::from_secs(19)), None);
        assert_eq!(
            fine.loss(renewed + RENEW_DEADLINE),
            Some(Loss::NotRenewed(RENEW_DEADLINE))
        );
        let taken = Renewal {
            renewed,
            lost: Some(Loss::HeldBy("other".into())),
        };
        assert_eq!(taken.loss(renewed), Some(Loss::HeldBy("other".into())));
    }
}
