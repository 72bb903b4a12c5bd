//! A stage's failure with its kind, for the site's report and the exit code.
//! Each error says its own kind beside its variants (`DeployError::kind`,
//! `RegistryError::kind`, `ApiError::kind`, `CopyError::kind`,
//! `BuildError::kind`, `SetupError::kind`, the pipeline file's errors);
//! [`kind_of`] finds the first error of a chain that knows its kind. An
//! error no module classifies is the site's own.

use crate::config::{ConfigError, EnvironmentError, OverrideError};
use crate::deploy::DeployError;
use crate::exit::Kind;
use crate::image::BuildError;
use crate::pipeline::SetupError;
use crate::registry::{ApiError, CopyError, RegistryError};

/// A stage's error and its kind: the site's failure, or the environment's
/// (a part the site needs could not be reached), or an interruption.
pub(crate) struct StageFailure {
    pub(crate) kind: Kind,
    pub(crate) error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for StageFailure {
    fn from(error: E) -> Self {
        let error = error.into();
        Self {
            kind: kind_of(&error),
            error,
        }
    }
}

impl StageFailure {
    /// berth was interrupted before a stage that would change something.
    pub(crate) fn interrupted(error: anyhow::Error) -> Self {
        Self {
            kind: Kind::Interrupted,
            error,
        }
    }
}

/// The kind of `error`: the kind the first error of its chain that knows its
/// kind says, else a site's failure.
pub fn kind_of(error: &anyhow::Error) -> Kind {
    error.chain().find_map(kind_of_one).unwrap_or(Kind::Site)
}

/// The kind `error` says, when it is one of the errors that know theirs.
fn kind_of_one(error: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    if let Some(error) = error.downcast_ref::<DeployError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<RegistryError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<ApiError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<CopyError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<BuildError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<SetupError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<ConfigError>() {
        Some(error.kind())
    } else if let Some(error) = error.downcast_ref::<EnvironmentError>() {
        Some(error.kind())
    } else {
        error.downcast_ref::<OverrideError>().map(OverrideError::kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_part_is_the_environments_wherever_it_is_in_the_chain() {
        let engine = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "down".into(),
        };
        let unreachable = anyhow::Error::new(BuildError::Unreachable(engine)).context("building www");
        assert_eq!(kind_of(&unreachable), Kind::Environment);
        let refused = anyhow::Error::new(SetupError::UnknownSite {
            name: "x".into(),
            config: "pipeline.toml".into(),
            known: "www".into(),
        });
        assert_eq!(kind_of(&refused), Kind::Usage);
        assert_eq!(kind_of(&anyhow::anyhow!("a build command failed")), Kind::Site);
        let failure = StageFailure::from(BuildError::Unreachable(
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "down".into(),
            },
        ));
        assert_eq!(failure.kind, Kind::Environment);
    }
}
