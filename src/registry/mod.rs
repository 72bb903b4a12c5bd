//! Registry stage: credentials, the push itself, the pushed digest, what
//! the registry holds, and the names of what goes in a registry.
//!
//! 1. [`credentials`]: resolve credentials for the registry from the source
//!    the pipeline file names: Docker's `config.json` (`auths`, `credHelpers`,
//!    `credsStore`, read by docker's rules), environment variables, or files;
//!    and, for a build, every registry's credentials `config.json` knows. The
//!    secret stays in memory and is never printed.
//! 2. [`push`](mod@push): ask the registry (through the Engine) whether the tag exists,
//!    and its digest; push through the Engine API, retrying transient failures
//!    with backoff (an authentication failure is not retried and names the
//!    registry and the credential source, never the secret); read back the
//!    manifest digest the registry now holds for the tag.
//! 3. [`api`]: the Registry HTTP API v2 session (anonymous first, then Basic
//!    or a Bearer token): an image's labels read from its manifest and
//!    config, with nothing pulled.
//! 4. [`copy`](mod@copy): copy an image from one registry to another by
//!    digest, byte for byte, over that API (for `berth promote`: production
//!    runs the very manifest staging ran).
//! 5. [`inventory`]: what a repository holds (its tags, each image's labels,
//!    build time and bytes) and the delete of a manifest, for `berth gc`.
//!
//! The names of what goes in a registry (addresses, repositories, tags) are
//! [`crate::reference`]'s: the pipeline file's checks use them too.

pub mod api;
pub mod copy;
pub mod credentials;
pub mod inventory;
pub mod push;

pub use api::{ApiError, Endpoint};
pub use copy::{Copied, CopyError, copy_by_digest};
pub use credentials::{
    BuildCredentials, CredentialError, RegistryAuth, build_credentials, credentials_for_build,
    resolve_credentials,
};
pub use inventory::{Image, Repository};
pub use push::{EngineFailure, inspect_or_pull, plain_http, pull, push, registry_digest};

/// What can go wrong with the registry: its credentials, a push, a pull or
/// a question about a tag.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused our credentials (or we had none). Not retried.
    #[error("registry {registry} refused the push: {cause} (credentials from {source_description})")]
    Auth {
        registry: String,
        cause: EngineFailure,
        source_description: String,
    },
    /// Credentials could not be read from their source.
    #[error("cannot read registry credentials from {source_description}: {problem}")]
    Credentials {
        source_description: String,
        problem: credentials::CredentialError,
    },
    /// The push failed after retries.
    #[error("pushing {image} failed after {attempts} attempts: {cause}")]
    Failed {
        image: String,
        attempts: u32,
        cause: EngineFailure,
    },
    /// The Engine could not reach the registry (down, wrong address), after
    /// retries: an environment error, like an unreachable Engine or cluster.
    #[error("cannot reach the registry of {image}: failed after {attempts} attempts: {cause}")]
    RegistryUnreachable {
        image: String,
        attempts: u32,
        cause: EngineFailure,
    },
    /// The registry holds no digest for what we pushed.
    #[error("the registry reported no digest for {0}")]
    NoDigest(String),
    /// The Engine could not be reached.
    #[error("cannot reach the Docker Engine: {0}")]
    Unreachable(bollard::errors::Error),
}

impl RegistryError {
    /// An unreachable registry or Engine is the environment's failure (exit
    /// 3); a refusal (credentials, a push the registry turns down) is the
    /// site's.
    pub fn kind(&self) -> crate::exit::Kind {
        match self {
            Self::Unreachable(_) | Self::RegistryUnreachable { .. } => crate::exit::Kind::Environment,
            _ => crate::exit::Kind::Site,
        }
    }
}
