//! The source tree's shape: data flows one way, cli → settings → commands →
//! pipeline → stages → leaves. [`LAYERS`] is the one map of it (STYLE.md and
//! lib.rs point here), and three rules hold, read from `src/` as text (no
//! stack needed):
//! - no module imports from a layer above its own, and the imports form no
//!   cycle;
//! - the stages (`git`, `image`, `registry`, `deploy`) import no other stage:
//!   the pipeline hands each what it needs;
//! - nothing above the pipeline imports a stage: a verb asks the pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top first. A module not listed fails the test: a new one
/// must be placed.
const LAYERS: &[&[&str]] = &[
    &["lib"],
    &["cli"],
    &["commands"],
    // `berth serve`'s HTTP side: webhooks in, its page out.
    &["server"],
    // What cli resolved from the global options: commands read it.
    &["settings"],
    &["pipeline"],
    STAGES,
    &["config"],
    &["exit", "reference", "ui", "http", "files"],
];

/// The stages, one layer: each imports none of the others.
const STAGES: &[&str] = &["git", "image", "registry", "deploy", "forge"];

/// The top-level module of each file (`lib` for lib.rs and main.rs), and the
/// top-level modules it names through `crate::`, tests and comments left out.
fn imports(source: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(source) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = entry.path().strip_prefix(source).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = match first.trim_end_matches(".rs") {
            "main" | "lib" => "lib".to_string(),
            other => other.to_string(),
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let code: Vec<&str> = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        let used = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code.join("\n")) {
            if name != module {
                used.insert(name);
            }
        }
    }
    graph
}

/// The top-level modules `code` names through `crate::`, in a path
/// (`crate::deploy::Deployer`) or a group (`use crate::{deploy, ui::Printer}`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let word = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(word(rest));
            continue;
        };
        // The group's own items, split at its top-level commas.
        let mut depth = 0_usize;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '}' if depth == 0 => break,
                ',' if depth == 0 => {
                    names.insert(word(&item));
                    item.clear();
                    continue;
                }
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            item.push(c);
        }
        names.insert(word(&item));
    }
    names.remove("");
    names
}

#[test]
fn a_grouped_crate_import_names_each_of_its_modules() {
    let names = crate_paths(
        "use crate::{\n    deploy::{self, Deployer},\n    ui::Printer,\n};\nlet x = crate::exit::OK;",
    );
    assert_eq!(
        names,
        BTreeSet::from(["deploy".into(), "exit".into(), "ui".into()])
    );
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/it/layout.rs"))
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_use_only_their_layer_or_lower_ones_and_form_no_cycle() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut upward = Vec::new();
    for (module, used) in &graph {
        for other in used {
            if layer_of(other) < layer_of(module) {
                upward.push(format!("{module} -> {other}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that go up a layer: {upward:?}");
    assert_eq!(cycle(&graph), None, "modules that import each other in a circle");
}

#[test]
fn stages_import_no_other_stage_and_only_the_pipeline_reaches_them() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let pipeline = layer_of("pipeline");
    let mut sideways = Vec::new();
    let mut around = Vec::new();
    for (module, used) in &graph {
        for other in used.iter().filter(|other| STAGES.contains(&other.as_str())) {
            if STAGES.contains(&module.as_str()) {
                sideways.push(format!("{module} -> {other}"));
            } else if layer_of(module) < pipeline {
                around.push(format!("{module} -> {other}"));
            }
        }
    }
    assert!(
        sideways.is_empty(),
        "stages that import another stage: {sideways:?}"
    );
    assert!(
        around.is_empty(),
        "modules above the pipeline that reach a stage: {around:?}"
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(module, used)| (module.to_string(), used.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn unsafe_code_lives_in_git_ffi_only() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(&source) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = entry.path().strip_prefix(&source).unwrap().display().to_string();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .any(|line| line.contains("unsafe"));
        if relative != "git/ffi.rs" && code {
            found.push(relative);
        }
    }
    assert!(found.is_empty(), "unsafe outside src/git/ffi.rs: {found:?}");
}
