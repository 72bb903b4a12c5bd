//! The CI examples of `docs/ci/` stay true: their YAML parses, and every
//! `berth` command their jobs run is one `berth --help` lists, with options
//! berth accepts, once bash has expanded it as the job's shell would. The
//! sites they ship are sites of the bundled `pipeline.toml`.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::repo_root;

/// Every `*.yml` under `docs/ci/`.
fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(repo_root().join("docs/ci"))
        .into_iter()
        .flatten()
        .map(walkdir::DirEntry::into_path)
        .filter(|path| path.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// The shell scripts of a workflow: GitHub's `run` and GitLab's
/// `script`, `before_script` and `after_script`, wherever they are.
fn scripts(yaml: &Yaml, found: &mut Vec<String>) {
    match yaml {
        Yaml::Hash(hash) => {
            for (key, value) in hash {
                let script_key = matches!(
                    key.as_str(),
                    Some("run" | "script" | "before_script" | "after_script")
                );
                match (script_key, value) {
                    (true, Yaml::String(text)) => found.push(text.clone()),
                    (true, Yaml::Array(lines)) => {
                        found.extend(lines.iter().filter_map(|l| l.as_str().map(str::to_string)));
                    }
                    _ => scripts(value, found),
                }
            }
        }
        Yaml::Array(items) => items.iter().for_each(|item| scripts(item, found)),
        _ => {}
    }
}

/// The `berth …` command lines of `scripts`, continuation lines joined.
fn berth_lines(scripts: &[String]) -> Vec<String> {
    scripts
        .iter()
        .flat_map(|script| {
            script
                .replace("\\\n", " ")
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|line| line.trim().to_string())
        .filter(|line| line.starts_with("berth "))
        .collect()
}

/// `line`'s arguments to `berth`, as bash passes them (onto descriptor 3,
/// whatever the line redirects): GitHub's `${{ … }}` expressions replaced by
/// a value first (a matrix site by a site).
fn arguments(line: &str, folder: &Path) -> Vec<String> {
    let mut text = line.replace("${{ matrix.site }}", "www-en");
    while let Some(start) = text.find("${{") {
        let end = text[start..].find("}}").expect("a closed expression") + start + 2;
        text.replace_range(start..end, "expression");
    }
    let words = folder.join("words");
    let script = format!("exec 3>words\nberth() {{ printf '%s\\0' \"$@\" >&3; }}\n{text}\n");
    let output = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(folder)
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env("SITE", "www-de")
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "{line}: {}",
        crate::support::text(&output)
    );
    std::fs::read_to_string(words)
        .unwrap()
        .split('\0')
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_ci_examples_parse_and_run_only_commands_berth_has() {
    let help = crate::support::Berth::new(["--help"])
        .in_dir(repo_root())
        .succeeds()
        .stdout();
    let pipeline =
        berth::config::Config::load(&repo_root().join("pipeline.toml")).expect("the bundled pipeline.toml");
    let folder = tempfile::tempdir().unwrap();
    let files = examples();
    assert!(files.len() >= 3, "{files:?}");
    let mut commands = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let documents =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut found = Vec::new();
        for document in &documents {
            scripts(document, &mut found);
        }
        let lines = berth_lines(&found);
        assert!(!lines.is_empty(), "{} runs no berth command", file.display());
        for line in lines {
            let words = arguments(&line, folder.path());
            let parsed =
                berth::cli::Cli::try_parse_from(std::iter::once("berth".to_string()).chain(words.clone()))
                    .unwrap_or_else(|e| panic!("{}: `{line}` ({words:?}): {e}", file.display()));
            let command = words
                .iter()
                .find(|word| !word.starts_with('-'))
                .expect("a command")
                .clone();
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{command} "))),
                "{}: `{command}` is not in berth --help:\n{help}",
                file.display()
            );
            if let berth::cli::Command::Verb(berth::commands::Command::Ship(ship)) = &parsed.command {
                assert!(
                    pipeline.site(&ship.site).is_some(),
                    "{}: ships `{}`, which pipeline.toml lacks",
                    file.display(),
                    ship.site
                );
            }
            commands.push(command);
        }
    }
    for expected in ["validate", "ship", "run", "plan", "status"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "no example runs `berth {expected}`"
        );
    }
}
