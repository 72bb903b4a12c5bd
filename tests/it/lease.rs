//! The Deployment's lease as a fence, through the real binary: berth that
//! loses its lease mid-rollout stops touching the Deployment (no rollback of
//! what another caller owns now), and expiry is decided by berth's own clock,
//! not by the times another host wrote on the lease.

use std::time::{Duration, Instant};

use crate::support::{World, exit};

/// A world with the `landing` example to ship to Deployment `web` (3 replicas
/// on the busybox base, progress deadline `deadline_seconds`), as image
/// `image_name` (`notready-…` never gets ready).
async fn world(test: &str, image_name: &str, deadline_seconds: i32) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    world
        .kwok_deployment("web", &world.busybox())
        .replicas(3)
        .progress_deadline(deadline_seconds)
        .create()
        .await;
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("120s");
    pipeline.site_mut("landing").image = world.image(image_name);
    world.write_pipeline(&pipeline);
    world
}

/// What berth writes to Deployment `web`, and nothing else does: its spec's
/// generation and berth's annotations (a status update changes neither).
async fn written(world: &World) -> (i64, Vec<(String, String)>) {
    let deployment = world.deployment("web").await;
    let annotations = deployment
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.starts_with("berth.dev/") || key == "kubernetes.io/change-cause")
        .collect();
    (deployment.metadata.generation.unwrap(), annotations)
}

/// Red when the renewal does not report the lease taken, when the wait does
/// not end on the loss (berth waits for the 90 s progress deadline), or when
/// berth writes to the Deployment after the loss: a rollback (the image goes
/// back to the base), or any other patch of its spec or berth's annotations.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_taken_mid_rollout_stops_berth_without_a_rollback_and_is_left_to_its_holder() {
    let world = world("lease-taken", "notready-web", 90).await;
    // berth has set its image and waits for pods that never get ready.
    let run = world.berth(["-v", "run"]).spawn_until("rollout to finish");
    let set = world.image_of("web").await;
    assert!(set.contains("/notready-web:"), "{set}\n{}", run.so_far());
    let before = written(&world).await;
    let other = "berth ship on another-runner";
    world.hold_lease(other, 0).await;
    let taken = Instant::now();
    let ran = run
        .wait()
        .exited(exit::SITE_FAILED)
        .has("berth lost the lock on Deployment")
        .has(&format!("its lease is held by {other} now"))
        .has("touched it no more after that")
        .lacks("rolled back")
        .lacks("rolling back");
    let lost_after = taken.elapsed();
    // Seen by the next renewal (every 10 s), long before the progress deadline.
    assert!(
        lost_after < Duration::from_secs(25),
        "stopped {lost_after:?} after the lease was taken:\n{ran}"
    );
    assert_eq!(world.image_of("web").await, set, "no rollback patch:\n{ran}");
    assert_eq!(
        written(&world).await,
        before,
        "berth wrote nothing to the Deployment after it lost the lock:\n{ran}"
    );
    assert_eq!(
        world.lease_holder().await,
        other,
        "the other holder's lease is left alone"
    );
}

/// A holder whose clock is an hour behind, renewing every 2 s, is alive for
/// longer than a lease's 30 s: red when berth compares its own clock with the
/// recorded `renewTime` (the lease looks an hour expired and is taken at
/// once), and when it ignores the renewals (taken after 30 s). The wait is
/// measured from berth's "waiting for" line, not from its start (the build
/// before it does not count).
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_keeps_being_renewed_is_alive_though_its_times_are_an_hour_old() {
    let world = world("lease-skew-behind", "web", 120).await;
    let holder = "berth ship on a runner whose clock is an hour behind";
    world.hold_lease(holder, 3600).await;
    let generation = world.generation("web").await;
    let mut run = world
        .berth(["run", "--lock-wait", "45s"])
        .spawn_until(&format!("waiting for {holder}"));
    let waiting = Instant::now();
    // The holder renews every 2 s, by its clock an hour behind, while berth waits.
    while run.is_running() {
        world.hold_lease(holder, 3600).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let waited = waiting.elapsed();
    let ran = run
        .wait()
        .exited(exit::SITE_FAILED)
        .has(&format!("is being deployed by {holder}"));
    assert!(
        waited >= Duration::from_secs(44),
        "gave up {waited:?} after it began to wait, before --lock-wait's 45 s:\n{ran}"
    );
    assert_eq!(world.generation("web").await, generation, "nothing changed");
    assert_eq!(world.lease_holder().await, holder);
}

/// A holder that wrote a `renewTime` an hour ahead and then stopped is taken
/// once berth has seen it unchanged for the lease's 30 s: red when berth
/// trusts the recorded time (it waits out `--lock-wait` and fails) or does
/// not wait for the lease duration (it takes the lease at once). Measured
/// from berth's "waiting for" line to the lease changing hands.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_never_changes_is_taken_after_its_duration_though_its_times_are_an_hour_ahead() {
    let world = world("lease-skew-ahead", "web", 120).await;
    let crashed = "crashed runner whose clock was an hour ahead";
    world.hold_lease(crashed, -3600).await;
    let mut run = world
        .berth(["run", "--lock-wait", "60s"])
        .spawn_until(&format!("waiting for {crashed}"));
    let waiting = Instant::now();
    while world.lease_holder().await == crashed && run.is_running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = waiting.elapsed();
    let ran = run.wait().exited(exit::OK);
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(40),
        "took the lease {took:?} after it began to wait:\n{ran}"
    );
    assert!(world.image_of("web").await.contains(&world.repo_head("landing")));
    assert_eq!(world.lease_holder().await, "", "released afterwards");
}
