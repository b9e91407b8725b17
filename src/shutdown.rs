//! A shutdown signal every background loop listens to.

use tokio::sync::watch;

/// Sender half: trigger once to stop everything that holds a [`Shutdown`].
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receiver half, cheap to clone into each loop.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Signals shutdown to every receiver (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new receiver of this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is triggered (or the trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
