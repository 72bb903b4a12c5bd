//! `berth validate` on broken configs: every problem, with <file:line:column> and
//! the key, exit code 2. Snapshots in `snapshots/`.

use std::path::PathBuf;

use crate::support::{berth_in, snapshot_settings};

fn fixtures() -> PathBuf {
    crate::support::repo_root().join("tests/fixtures/configs")
}

/// `berth validate --config file` in the fixtures folder: its exit code and
/// stderr. Snapshots of it go through the shared filters (the clock of plain lines).
fn validate(file: &str) -> (Option<i32>, String) {
    let output = berth_in(&fixtures(), &["validate", "--config", file]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.code(), stderr)
}

#[test]
fn a_valid_config_passes() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("valid.toml");
    assert_eq!(code, Some(0), "{output}");
    insta::assert_snapshot!(output, @"[TIME] valid.toml: ok (1 repos, 1 sites)");
}

#[test]
fn unknown_keys_are_all_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("unknown-keys.toml");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("unknown_keys", output);
}

#[test]
fn broken_references_names_paths_and_durations_are_all_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("references.toml");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("references", output);
}

#[test]
fn wrong_types_and_missing_keys_are_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("types.toml");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("types", output);
}

#[test]
fn ssh_keys_are_for_ssh_remotes_and_name_files_that_exist() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("ssh.toml");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("ssh", output);
}

#[test]
fn toml_syntax_errors_name_the_place() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let (code, output) = validate("syntax.toml");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("syntax", output);
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let (code, output) = validate("does-not-exist.toml");
    assert_eq!(code, Some(2));
    assert!(output.contains("cannot read does-not-exist.toml"), "{output}");
}
