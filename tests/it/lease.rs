//! The Deployment's lease as a fence, through the real binary: berth that
//! loses its lease mid-rollout stops touching the Deployment (no rollback of
//! what another caller owns now), and expiry is decided by berth's own clock,
//! not by the times another host wrote on the lease.

use std::time::{Duration, Instant};

use crate::support::{World, text};

/// A world with the `landing` example to ship to Deployment `web` (3 replicas
/// on the busybox base, progress deadline `deadline_seconds`), as image
/// `image_name` (`notready-…` never gets ready).
async fn world(test: &str, image_name: &str, deadline_seconds: i32) -> World {
    let world = World::new(test).await;
    world.copy_repo("landing");
    world
        .create_deployment_with_deadline("web", 3, &world.busybox(), deadline_seconds)
        .await;
    let mut pipeline = world.landing_pipeline().with_rollout_timeout("120s");
    pipeline.site_mut("landing").image = world.image(image_name);
    world.write_pipeline(&pipeline);
    world
}

/// Red when the renewal does not report the lease taken, when the wait does
/// not end on the loss (berth waits for the 90 s progress deadline), or when
/// berth rolls back after the loss (the image goes back to the base).
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_taken_mid_rollout_stops_berth_without_a_rollback_and_is_left_to_its_holder() {
    let world = world("lease-taken", "notready-web", 90).await;
    let base = world.busybox();
    let child = world.spawn_berth(&["run"]);
    // Wait until berth has set its image (the rollout then waits for pods that never get ready).
    let started = Instant::now();
    let set = loop {
        let image = world.image_of("web").await;
        if image != base {
            break image;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "berth never set the image"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(set.contains("/notready-web:"), "{set}");
    let other = "berth ship on another-runner";
    world.hold_lease(other, 0).await;
    let taken = Instant::now();
    let output = child.wait_with_output().unwrap();
    let lost_after = taken.elapsed();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("berth lost the lock on Deployment")
            && all.contains(&format!("its lease is held by {other} now")),
        "{all}"
    );
    assert!(all.contains("touched it no more after that"), "{all}");
    assert!(
        !all.contains("rolled back") && !all.contains("rolling back"),
        "{all}"
    );
    // Seen by the next renewal (every 10 s), long before the progress deadline.
    assert!(
        lost_after < Duration::from_secs(25),
        "stopped after {lost_after:?}"
    );
    assert_eq!(world.image_of("web").await, set, "no rollback patch");
    assert_eq!(
        world.lease_holder().await,
        other,
        "the other holder's lease is left alone"
    );
}

/// A holder whose clock is an hour behind, renewing every 2 s, is alive for
/// longer than a lease's 30 s: red when berth compares its own clock with the
/// recorded `renewTime` (the lease looks an hour expired and is taken at
/// once), and when it ignores the renewals (taken after 30 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_keeps_being_renewed_is_alive_though_its_times_are_an_hour_old() {
    let world = world("lease-skew-behind", "web", 120).await;
    let holder = "berth ship on a runner whose clock is an hour behind";
    world.hold_lease(holder, 3600).await;
    let generation = world.generation("web").await;
    let started = std::time::Instant::now();
    let mut child = world.spawn_berth(&["run", "--lock-wait", "45s"]);
    // The holder renews every 2 s, by its clock an hour behind, while berth waits.
    while child.try_wait().unwrap().is_none() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.hold_lease(holder, 3600).await;
    }
    let output = child.wait_with_output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains(&format!("is being deployed by {holder}")), "{all}");
    assert!(
        started.elapsed() >= Duration::from_secs(44),
        "waited out --lock-wait: {all}"
    );
    assert_eq!(world.generation("web").await, generation, "nothing changed");
    assert_eq!(world.lease_holder().await, holder);
}

/// A holder that wrote a `renewTime` an hour ahead and then stopped is taken
/// once berth has seen it unchanged for the lease's 30 s: red when berth
/// trusts the recorded time (it waits out `--lock-wait` and fails) or does
/// not wait for the lease duration (it takes the lease at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_never_changes_is_taken_after_its_duration_though_its_times_are_an_hour_ahead() {
    let world = world("lease-skew-ahead", "web", 120).await;
    world
        .hold_lease("crashed runner whose clock was an hour ahead", -3600)
        .await;
    let started = Instant::now();
    let output = world.berth(&["run", "--lock-wait", "60s"]);
    let took = started.elapsed();
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("waiting for crashed runner"), "{all}");
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(45),
        "took the lease after {took:?}"
    );
    assert!(world.image_of("web").await.contains(&world.repo_head("landing")));
    assert_eq!(world.lease_holder().await, "", "released afterwards");
}
