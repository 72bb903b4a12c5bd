//! Ctrl-C and SIGTERM during a run. The first sets the flag the pipeline
//! reads before each stage: no new stage starts, rollouts in flight finish or
//! roll back and release their locks. The second exits at once; held leases
//! then expire for the next caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::exit;
use crate::ui::Printer;

/// The flag a run stops starting stages at, set by the first Ctrl-C (or
/// SIGTERM); the watch ends with the process.
pub fn watch(printer: &Printer) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    tokio::spawn(watch_signals(interrupted.clone(), printer.clone()));
    interrupted
}

async fn watch_signals(interrupted: Arc<AtomicBool>, printer: Printer) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return;
    };
    for count in 0.. {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if count == 0 {
            interrupted.store(true, Ordering::SeqCst);
            printer.warning("interrupted: no new work starts; rollouts in flight finish or roll back, then berth stops (again to abort now)");
        } else {
            printer.warning("aborted: Deployment leases held now expire within 30s");
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    }
}
