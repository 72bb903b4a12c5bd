//! The git stage: a bare mirror per repo, fetched with libgit2, and what
//! berth reads from it.

pub mod ffi;
pub mod pack_index;
