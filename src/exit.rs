//! Exit codes, documented in the README, and the one place that turns what
//! went wrong into one. Each error says its own [`Kind`] beside its variants
//! (`ConfigError::kind`, `DeployError::kind`, ...), a report says the kinds
//! its sites failed with, and [`code`] picks the code. A leaf: it imports
//! nothing of berth.

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

/// What kind of thing went wrong: it decides the exit code, and a site's
/// report names it (`failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The command line or the pipeline file asks for something that cannot
    /// be: nothing ran (exit 2).
    Usage,
    /// The site's own problem: its build, its rollout, a missing commit
    /// (exit 1).
    Site,
    /// A part the site needs could not be reached: the Docker Engine, the
    /// registry, the cluster (exit 3).
    Environment,
    /// berth was interrupted (Ctrl-C, SIGTERM) before the site's next stage
    /// (exit 130).
    Interrupted,
}

impl Kind {
    /// The kind's exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Usage => USAGE,
            Self::Site => SITE_FAILED,
            Self::Environment => ENVIRONMENT,
            Self::Interrupted => INTERRUPTED,
        }
    }

    /// Which kind decides the code when several happened in one command:
    /// interrupted wins over everything (the sites in flight then finished
    /// or rolled back), then an unreachable part, then usage, then a site.
    fn rank(self) -> u8 {
        match self {
            Self::Interrupted => 3,
            Self::Environment => 2,
            Self::Usage => 1,
            Self::Site => 0,
        }
    }
}

/// The code of a command whose parts failed with `kinds`: OK when none did,
/// else the code of the kind that wins ([`Kind::rank`]).
pub fn code(kinds: impl IntoIterator<Item = Kind>) -> u8 {
    kinds
        .into_iter()
        .max_by_key(|kind| kind.rank())
        .map_or(OK, Kind::code)
}

/// SITE_FAILED when any of `failed` is true, else OK (plan, status, mirror).
pub fn of_failures(mut failed: impl Iterator<Item = bool>) -> u8 {
    if failed.any(|f| f) { SITE_FAILED } else { OK }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_failed_is_ok_and_the_worst_kind_decides() {
        assert_eq!(code([]), OK);
        assert_eq!(code([Kind::Site]), SITE_FAILED);
        assert_eq!(code([Kind::Site, Kind::Environment, Kind::Site]), ENVIRONMENT);
        assert_eq!(code([Kind::Usage]), USAGE);
        assert_eq!(code([Kind::Site, Kind::Usage]), USAGE);
        // Interrupted wins over every other, even an unreachable part.
        assert_eq!(code([Kind::Environment, Kind::Interrupted]), INTERRUPTED);
        assert_eq!(code([Kind::Interrupted, Kind::Site]), INTERRUPTED);
    }

    #[test]
    fn failures_are_counted_as_site_failures() {
        assert_eq!(of_failures([false, false].into_iter()), OK);
        assert_eq!(of_failures([false, true].into_iter()), SITE_FAILED);
    }
}
