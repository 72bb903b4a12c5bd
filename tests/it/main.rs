//! berth's integration tests: the real `berth` binary and the real parts of the
//! local stack (Docker Engine, registries, Git server, Kubernetes control plane
//! with kwok and a real node). Run them with `scripts/test`, which starts the stack first.

mod callers;
mod ci_examples;
mod conventions;
mod deploy;
mod environments;
mod faults;
mod forge;
mod gc;
mod helm;
mod images;
mod layout;
mod lease;
mod mirror;
mod moved;
mod pipeline;
mod preview;
mod real_node;
mod registry_copy;
mod registry_credentials;
mod serve;
mod stack;
mod support;
mod validate;
