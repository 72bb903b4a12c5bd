//! The command-line conventions users of kubectl, Helm and cargo expect, on
//! the real stack: the cluster options as kubectl spells them and their
//! `BERTH_*` variables, `status`'s exit code, `--timeout`, and completion
//! scripts that a real shell loads.

use std::time::Duration;

use crate::support::{Kubernetes, RolloutState, World, exit, text};

/// The stack's admin context, the one a test's kubeconfig names.
fn stack_context() -> String {
    std::env::var("BERTH_STACK_CONTEXT").expect("BERTH_STACK_CONTEXT (eval \"$(scripts/stack env)\")")
}

fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").expect("KUBECONFIG (eval \"$(scripts/stack env)\")")
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_options_and_their_variables_replace_the_files_cluster_and_status_exits_1_on_a_failed_rollout()
 {
    let world = World::new("cluster-options").await;
    world.copy_repo("landing");
    // A Deployment whose rollout fails: its pods never get ready, and its
    // progress deadline is 5 seconds.
    let never_ready = format!("{}/{}/notready-web:1", world.stack.registry, world.prefix);
    world
        .kwok_deployment("web", &never_ready)
        .progress_deadline(5)
        .create()
        .await;
    // The file names a context the kubeconfig lacks and a namespace that
    // does not exist; the site names no namespace of its own.
    let mut pipeline = world.landing_pipeline();
    pipeline.kubernetes = Some(Kubernetes {
        context: Some("no-such-context".into()),
        namespace: Some("no-such-namespace".into()),
        rollout_timeout: Some("2m".into()),
    });
    assert!(pipeline.site_mut("landing").deployment.namespace.is_none());
    world.write_pipeline(&pipeline);

    world
        .berth(["status"])
        .fails_with(exit::ENVIRONMENT)
        .has("no-such-context");

    world
        .wait_for_rollout("web", Duration::from_secs(60), |state| {
            matches!(state, RolloutState::Failed(_))
        })
        .await;
    let context = stack_context();
    let flags = [
        "status",
        "--json",
        "--context",
        &context,
        "--namespace",
        &world.namespace,
    ];
    let by_flags = world.berth(flags);
    let by_variables = world
        .berth(["status", "--json"])
        .env("BERTH_CONTEXT", &context)
        .env("BERTH_NAMESPACE", &world.namespace);
    for berth in [by_flags, by_variables] {
        // A failed rollout.
        let status = berth.fails_with(exit::SITE_FAILED).json();
        let site = &status["sites"][0];
        assert_eq!(site["rollout"], "failed", "{status:#}");
        assert_eq!(site["deployed_image"], never_ready.as_str(), "{status:#}");
        assert!(site["error"].is_null(), "{status:#}");
    }

    // --kubeconfig (and BERTH_KUBECONFIG) wins over KUBECONFIG.
    let kubeconfig = kubeconfig();
    let mut with_file = flags.to_vec();
    with_file.extend(["--kubeconfig", kubeconfig.as_str()]);
    let lost = ("KUBECONFIG", "/nonexistent/kubeconfig");
    world
        .berth(flags)
        .env(lost.0, lost.1)
        .fails_with(exit::ENVIRONMENT);
    world
        .berth(&with_file)
        .env(lost.0, lost.1)
        .fails_with(exit::SITE_FAILED);
    world
        .berth(flags)
        .env(lost.0, lost.1)
        .env("BERTH_KUBECONFIG", &kubeconfig)
        .fails_with(exit::SITE_FAILED);

    // The rollout mended, status exits 0.
    world.set_image("web", &world.busybox()).await;
    world
        .wait_for_rollout("web", Duration::from_secs(60), |state| {
            *state == RolloutState::Complete
        })
        .await;
    let mended = world.berth(flags).json();
    assert_eq!(mended["sites"][0]["rollout"], "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_replaces_the_files_rollout_timeout() {
    let world = World::new("timeout-flag").await;
    world.copy_repo("landing");
    let base = world.busybox();
    // A progress deadline of 60 s, a file's timeout of 2 minutes: only
    // --timeout can end the wait after 3 s.
    world
        .kwok_deployment("web", &base)
        .progress_deadline(60)
        .create()
        .await;
    let mut pipeline = world.landing_pipeline();
    pipeline.site_mut("landing").image = world.image("notready-web");
    world.write_pipeline(&pipeline);
    for berth in [
        world.berth(["run", "--json", "--timeout", "3s"]),
        world.berth(["run", "--json"]).env("BERTH_TIMEOUT", "3s"),
    ] {
        let ran = berth
            .fails_with(exit::SITE_FAILED)
            .has("timed out after 3s")
            .has("rolled back");
        // From the patch to the end of the rollback: the 3 s wait, not the
        // 60 s deadline (the build before it does not count).
        let deploy = ran.json()["sites"][0]["durations"]["deploy"]
            .as_f64()
            .unwrap_or_else(|| panic!("no deploy duration:\n{ran}"));
        assert!(deploy < 40.0, "the deploy stage took {deploy:.1}s:\n{ran}");
        assert_eq!(world.image_of("web").await, base, "rolled back");
    }
}

#[test]
fn bash_loads_the_completion_script_and_completes_commands_and_options() {
    let berth = env!("CARGO_BIN_EXE_berth");
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        // Bash calls a completion function with the command, the word being
        // completed and the one before it.
        let script = format!(
            "source <({berth} completions bash) && COMP_WORDS=({}) && COMP_CWORD={} && _berth berth \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words
                .iter()
                .map(|word| format!("'{word}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("run bash");
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let commands = complete("berth st");
    assert!(commands.lines().any(|l| l == "status"), "{commands}");
    let options = complete("berth status --kube");
    assert!(options.lines().any(|l| l == "--kubeconfig"), "{options}");
    let colours = complete("berth --color ");
    for choice in ["auto", "always", "never"] {
        assert!(colours.lines().any(|l| l == choice), "{colours}");
    }
}
