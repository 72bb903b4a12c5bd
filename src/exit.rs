//! Exit codes, documented in the README, and the one place that decides them:
//! from a run's report, from the error a command stopped with, or from a
//! count of failures.

use crate::config::{ConfigError, EnvironmentError, OverrideError};
use crate::pipeline::gc::GcReport;
use crate::pipeline::{FailureKind, RunReport, SetupError, SiteAction};

/// Everything went well.
pub const OK: u8 = 0;
/// At least one site failed (rolled back or not).
pub const SITE_FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// Environment error: Docker Engine, registry or cluster unreachable.
pub const ENVIRONMENT: u8 = 3;

/// Interrupted (Ctrl-C or SIGTERM): 128 + SIGINT, as shells report it. Once,
/// the run stops starting work and ends with this code; twice, berth exits at
/// once, without waiting for rollouts in flight.
pub const INTERRUPTED: u8 = 130;

/// A run's code: INTERRUPTED when berth was interrupted during it (the
/// sites in flight then finished or rolled back), else ENVIRONMENT when a site failed on an unreachable part,
/// else SITE_FAILED when a site failed, else OK.
pub fn of_run(report: &RunReport) -> u8 {
    if report.interrupted || report.sites.iter().any(|s| s.action == SiteAction::Interrupted) {
        INTERRUPTED
    } else if report
        .sites
        .iter()
        .any(|s| s.failure == Some(FailureKind::Environment))
    {
        ENVIRONMENT
    } else if report.sites.iter().any(|s| s.action == SiteAction::Failed) {
        SITE_FAILED
    } else {
        OK
    }
}

/// The code of a command that stopped with `error`, by its kind.
pub fn of_error(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<ConfigError>().is_some()
            || cause.downcast_ref::<EnvironmentError>().is_some()
            || cause.downcast_ref::<OverrideError>().is_some()
        {
            return USAGE;
        }
        if let Some(setup) = cause.downcast_ref::<SetupError>() {
            return match setup {
                SetupError::UnknownSite { .. }
                | SetupError::UnknownRepo { .. }
                | SetupError::NotInEnvironment { .. }
                | SetupError::SameEnvironment(_)
                | SetupError::NotEmpty { .. } => USAGE,
                SetupError::Environment(_) => ENVIRONMENT,
            };
        }
    }
    SITE_FAILED
}

/// `berth gc`'s code: ENVIRONMENT when a registry or cluster could not be
/// reached, else SITE_FAILED when a site's gc failed (a registry refused a
/// delete), else OK.
pub fn of_gc(report: &GcReport) -> u8 {
    if report
        .sites
        .iter()
        .any(|s| s.failure == Some(FailureKind::Environment))
    {
        ENVIRONMENT
    } else if report.sites.iter().any(|s| s.error.is_some()) {
        SITE_FAILED
    } else {
        OK
    }
}

/// SITE_FAILED when any of `failed` is true, else OK (plan, mirror).
pub fn of_failures(mut failed: impl Iterator<Item = bool>) -> u8 {
    if failed.any(|f| f) { SITE_FAILED } else { OK }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::SiteReport;

    fn report(actions: &[(SiteAction, Option<FailureKind>)], interrupted: bool) -> RunReport {
        RunReport {
            environment: None,
            sites: actions
                .iter()
                .map(|(action, failure)| SiteReport {
                    action: *action,
                    failure: *failure,
                    ..SiteReport::new("www")
                })
                .collect(),
            interrupted,
        }
    }

    #[test]
    fn an_interrupted_run_exits_130_whatever_its_sites_did() {
        let deployed = (SiteAction::Deployed, None);
        let failed = (SiteAction::Failed, Some(FailureKind::Environment));
        let skipped = (SiteAction::Interrupted, Some(FailureKind::Interrupted));
        assert_eq!(of_run(&report(&[deployed], false)), OK);
        assert_eq!(
            of_run(&report(&[deployed], true)),
            INTERRUPTED,
            "in flight, then done"
        );
        assert_eq!(of_run(&report(&[deployed, skipped], true)), INTERRUPTED);
        assert_eq!(of_run(&report(&[failed, skipped], true)), INTERRUPTED);
        assert_eq!(of_run(&report(&[failed], false)), ENVIRONMENT);
        assert_eq!(
            of_run(&report(&[(SiteAction::Failed, Some(FailureKind::Site))], false)),
            SITE_FAILED
        );
    }
}
