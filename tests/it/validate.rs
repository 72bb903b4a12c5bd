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

/// `berth validate --json --config file` in the fixtures folder, with `env`.
fn validate_json(file: &str, env: &[(&str, &str)]) -> (Option<i32>, serde_json::Value, String) {
    let mut command = crate::support::berth_command(&fixtures(), &["validate", "--json", "--config", file]);
    command.envs(env.iter().copied());
    let output = command.output().expect("run berth");
    let document = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", crate::support::text(&output)));
    crate::support::validate_against("validate.schema.json", &document);
    (
        output.status.code(),
        document,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn validate_json_gives_each_problem_its_file_line_column_key_and_message() {
    let (code, text) = validate("references.toml");
    let (json_code, document, _) = validate_json("references.toml", &[]);
    assert_eq!((code, json_code), (Some(2), Some(2)));
    assert_eq!(document["valid"], false);
    let problems = document["problems"].as_array().unwrap();
    // The same problems as the text, in the same order, at the same places.
    let lines: Vec<&str> = text.lines().filter(|line| line.contains(": error: ")).collect();
    assert_eq!(problems.len(), lines.len(), "{text}");
    for (problem, line) in problems.iter().zip(&lines) {
        let place = format!(
            "{}:{}:{}: error: ",
            problem["file"].as_str().unwrap(),
            problem["line"],
            problem["column"]
        );
        assert!(line.starts_with(&place), "{line} vs {problem}");
        assert!(
            line.ends_with(problem["message"].as_str().unwrap()),
            "{line} vs {problem}"
        );
        if let Some(key) = problem["key"].as_str() {
            assert!(line.contains(&format!("error: {key}: ")), "{line} vs {problem}");
        }
    }
    assert!(problems.iter().any(|p| p["key"].is_string()));

    let (code, valid, _) = validate_json("valid.toml", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(valid["valid"], true);
    assert_eq!(
        (valid["repos"].as_u64(), valid["sites"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(valid["problems"], serde_json::json!([]));

    let (code, missing, _) = validate_json("does-not-exist.toml", &[]);
    assert_eq!(code, Some(2));
    assert_eq!(missing["problems"][0]["file"], "does-not-exist.toml");
    assert!(missing["problems"][0]["line"].is_null());
}

#[test]
fn under_github_actions_each_problem_is_an_annotation_on_its_line() {
    let (_, document, stderr) = validate_json("references.toml", &[("GITHUB_ACTIONS", "true")]);
    let annotations: Vec<&str> = stderr.lines().filter(|l| l.starts_with("::error ")).collect();
    let problems = document["problems"].as_array().unwrap();
    assert_eq!(annotations.len(), problems.len(), "{stderr}");
    for (annotation, problem) in annotations.iter().zip(problems) {
        let head = format!(
            "::error file={},line={},col={},title=berth::",
            problem["file"].as_str().unwrap(),
            problem["line"],
            problem["column"]
        );
        assert!(annotation.starts_with(&head), "{annotation} vs {problem}");
    }
    // Without GitHub Actions, no annotations; the text run annotates too.
    let (_, _, plain) = validate_json("references.toml", &[]);
    assert!(!plain.contains("::error"), "{plain}");
    let mut command =
        crate::support::berth_command(&fixtures(), &["validate", "--config", "references.toml"]);
    let output = command.env("GITHUB_ACTIONS", "true").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("::error ")).count(),
        problems.len()
    );
}

#[test]
fn colour_follows_color_then_no_color_then_clicolor_force_then_the_ci() {
    let coloured = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["validate", "--config", "references.toml"];
        all.extend_from_slice(args);
        let mut command = crate::support::berth_command(&fixtures(), &all);
        command.env_remove("NO_COLOR").env_remove("CI");
        command.envs(env.iter().copied());
        let output = command.output().expect("run berth");
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        // An error stays readable either way.
        assert!(stderr.contains("error"), "{stderr}");
        stderr.contains("\x1b[")
    };
    // Not a terminal: no colour unless asked.
    assert!(!coloured(&[], &[]));
    assert!(coloured(&["--color", "always"], &[]));
    assert!(coloured(&[], &[("BERTH_COLOR", "always")]));
    assert!(!coloured(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]));
    assert!(coloured(&[], &[("CLICOLOR_FORCE", "1")]));
    assert!(!coloured(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]));
    assert!(coloured(&[], &[("CI", "true"), ("GITHUB_ACTIONS", "true")]));
    assert!(!coloured(
        &[],
        &[("CI", "true"), ("GITHUB_ACTIONS", "true"), ("NO_COLOR", "1")]
    ));
}

#[test]
fn the_pipeline_file_is_found_in_the_nearest_parent_folder() {
    let root = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("valid.toml"))
        .unwrap()
        .replace(
            "templates = \"../../../templates\"",
            &format!(
                "templates = \"{}\"",
                crate::support::repo_root().join("templates").display()
            ),
        );
    std::fs::write(root.path().join("pipeline.toml"), text).unwrap();
    let deep = root.path().join("content/posts");
    std::fs::create_dir_all(&deep).unwrap();
    let output = berth_in(&deep, &["validate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("../../pipeline.toml: ok (1 repos, 1 sites)"),
        "{stderr}"
    );
    // Nowhere above: a usage error that says where berth looked.
    let empty = tempfile::tempdir().unwrap();
    let output = berth_in(empty.path(), &["validate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no pipeline.toml in"), "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}
