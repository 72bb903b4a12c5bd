//! `berth validate` on broken configs: every problem, with <file:line:column> and
//! the key, exit code 2. Snapshots in `snapshots/`.

use std::path::PathBuf;

use crate::support::{Berth, Ran, exit, snapshot_settings};

fn fixtures() -> PathBuf {
    crate::support::repo_root().join("tests/fixtures/configs")
}

/// `berth validate --config file` in the fixtures folder. Snapshots of its
/// stderr go through the shared filters (the clock of plain lines).
fn validate(file: &str) -> Ran {
    Berth::new(["validate", "--config", file])
        .in_dir(fixtures())
        .run()
}

#[test]
fn a_valid_config_passes() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("valid.toml").exited(exit::OK).stderr();
    insta::assert_snapshot!(output, @"[TIME] valid.toml: ok (1 repos, 1 sites)");
}

#[test]
fn unknown_keys_are_all_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("unknown-keys.toml").exited(exit::USAGE).stderr();
    insta::assert_snapshot!("unknown_keys", output);
}

#[test]
fn broken_references_names_paths_and_durations_are_all_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("references.toml").exited(exit::USAGE).stderr();
    insta::assert_snapshot!("references", output);
}

#[test]
fn wrong_types_and_missing_keys_are_reported() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("types.toml").exited(exit::USAGE).stderr();
    insta::assert_snapshot!("types", output);
}

#[test]
fn ssh_keys_are_for_ssh_remotes_and_name_files_that_exist() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("ssh.toml").exited(exit::USAGE).stderr();
    insta::assert_snapshot!("ssh", output);
}

#[test]
fn toml_syntax_errors_name_the_place() {
    let _filters = snapshot_settings(&[]).bind_to_scope();
    let output = validate("syntax.toml").exited(exit::USAGE).stderr();
    insta::assert_snapshot!("syntax", output);
}

#[test]
fn a_missing_file_is_a_usage_error() {
    validate("does-not-exist.toml")
        .exited(exit::USAGE)
        .stderr_has("cannot read does-not-exist.toml");
}

/// `berth validate --json --config file` in the fixtures folder, with
/// `env`, and its document (checked against its schema).
fn validate_json(file: &str, env: &[(&str, &str)]) -> (Ran, serde_json::Value) {
    let ran = Berth::new(["validate", "--json", "--config", file])
        .in_dir(fixtures())
        .envs(env.iter().copied())
        .run();
    let document = ran.json();
    crate::support::validate_against("validate.schema.json", &document);
    (ran, document)
}

#[test]
fn validate_json_gives_each_problem_its_file_line_column_key_and_message() {
    let text = validate("references.toml").exited(exit::USAGE).stderr();
    let (ran, document) = validate_json("references.toml", &[]);
    ran.exited(exit::USAGE);
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

    let (ran, valid) = validate_json("valid.toml", &[]);
    ran.exited(exit::OK);
    assert_eq!(valid["valid"], true);
    assert_eq!(
        (valid["repos"].as_u64(), valid["sites"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(valid["problems"], serde_json::json!([]));

    let (ran, missing) = validate_json("does-not-exist.toml", &[]);
    ran.exited(exit::USAGE);
    assert_eq!(missing["problems"][0]["file"], "does-not-exist.toml");
    assert!(missing["problems"][0]["line"].is_null());
}

#[test]
fn under_github_actions_each_problem_is_an_annotation_on_its_line() {
    let (ran, document) = validate_json("references.toml", &[("GITHUB_ACTIONS", "true")]);
    let stderr = ran.stderr();
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
    validate_json("references.toml", &[]).0.lacks("::error");
    let stderr = Berth::new(["validate", "--config", "references.toml"])
        .in_dir(fixtures())
        .env("GITHUB_ACTIONS", "true")
        .fails_with(exit::USAGE)
        .stderr();
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("::error ")).count(),
        problems.len()
    );
}

#[test]
fn colour_follows_color_then_no_color_then_clicolor_force_then_the_ci() {
    let coloured = |args: &[&str], env: &[(&str, &str)]| {
        Berth::new(["validate", "--config", "references.toml"])
            .args(args)
            .in_dir(fixtures())
            .env_remove("NO_COLOR")
            .env_remove("CI")
            .envs(env.iter().copied())
            .fails_with(exit::USAGE)
            // An error stays readable either way.
            .stderr_has("error")
            .stderr()
            .contains("\x1b[")
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
    Berth::new(["validate"])
        .in_dir(&deep)
        .succeeds()
        .stderr_has("../../pipeline.toml: ok (1 repos, 1 sites)");
    // Nowhere above: a usage error that says where berth looked.
    let empty = tempfile::tempdir().unwrap();
    Berth::new(["validate"])
        .in_dir(empty.path())
        .fails_with(exit::USAGE)
        .stderr_has("no pipeline.toml in")
        .stderr_has("--config");
}
