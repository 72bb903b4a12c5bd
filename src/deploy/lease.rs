//! A per-Deployment lock held as a `coordination.k8s.io/v1` Lease.
//!
//! 1. Acquire: create `berth-<deployment>` in the Deployment's namespace, or take
//!    it over when it is free or its holder stopped renewing it (expired); every
//!    write carries the read `resourceVersion`, so two takers never both win.
//! 2. While the holder is alive, wait (bounded), saying who holds it; past the
//!    bound, fail naming the holder.
//! 3. Renew in the background every third of the lease's duration.
//! 4. Release by clearing the holder, so the next caller need not wait for expiry.
//!
//! The lease outlives its holders, so it also keeps berth's record of its
//! Deployment: annotations set by the holder ([`LeaseLock::annotate`]), read by
//! anyone ([`annotations_of`]), that change nothing in the Deployment itself.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::DeployError;
use crate::config::DeploymentTarget;

/// How long a lease lives without renewal: a crashed holder blocks others this long at most.
pub const LEASE_SECONDS: i32 = 30;

/// A held lease; renewal stops and the lease is released by [`LeaseLock::release`].
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    renewal: tokio::task::JoinHandle<()>,
    /// An image that passed, recorded on the lease by the write that frees it.
    passed: std::sync::Mutex<Option<super::Passed>>,
}

/// Who holds a lease that berth could not take.
#[derive(Debug, Clone)]
pub struct Holder {
    pub identity: String,
    pub expires_in: Duration,
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

/// Time left before `lease` expires; zero when it is free or expired.
fn remaining(lease: &Lease) -> Duration {
    let Some(spec) = &lease.spec else {
        return Duration::ZERO;
    };
    if spec.holder_identity.as_deref().unwrap_or_default().is_empty() {
        return Duration::ZERO;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Duration::ZERO;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let expires = renewed.0.as_second() + duration;
    let left = expires - Timestamp::now().as_second();
    Duration::from_secs(u64::try_from(left).unwrap_or(0))
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
    let started = std::time::Instant::now();
    let mut told = false;
    let refused = |verb: &'static str, error: kube::Error| {
        super::api_error(error, verb, "leases", &target.namespace, &name)
    };
    loop {
        match api.get_opt(&name).await.map_err(|e| refused("get", e))? {
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "berth"}},
                    "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS, "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0}
                }))
                .expect("a valid lease");
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(response)) if response.code == 409 => {}
                    Err(error) => return Err(refused("create", error)),
                }
            }
            Some(mut lease) => {
                let left = remaining(&lease);
                let holder = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default();
                if left.is_zero() || holder == identity {
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    if holder != identity {
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    }
                    spec.holder_identity = Some(identity.to_string());
                    spec.lease_duration_seconds = Some(LEASE_SECONDS);
                    spec.acquire_time = Some(now());
                    spec.renew_time = Some(now());
                    match api.replace(&name, &PostParams::default(), &lease).await {
                        Ok(_) => break,
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
    }
    let renewal = tokio::spawn(renew(api.clone(), name.clone(), identity.to_string()));
    Ok(LeaseLock {
        api,
        name,
        identity: identity.to_string(),
        renewal,
        passed: std::sync::Mutex::default(),
    })
}

async fn renew(api: Api<Lease>, name: String, identity: String) {
    let period = Duration::from_secs(u64::try_from(LEASE_SECONDS / 3).unwrap_or(10));
    loop {
        tokio::time::sleep(period).await;
        let Ok(mut lease) = api.get(&name).await else {
            continue;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(identity.as_str()) {
            tracing::warn!("lease {name} was taken by {:?}", spec.holder_identity);
            return;
        }
        spec.renew_time = Some(now());
        if let Err(error) = api.replace(&name, &PostParams::default(), &lease).await {
            tracing::debug!("renewing lease {name} failed: {error}");
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
                return Err(DeployError::Refused {
                    verb: "update",
                    resource: "leases",
                    namespace: self.api_namespace().to_string(),
                    name: self.name.clone(),
                    message: format!("the lease is held by {} now", holder.unwrap_or("nobody")),
                });
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
