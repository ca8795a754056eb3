//! [`Gate`]: holds stalled responses until a test opens it, and tells the test when a
//! response has reached it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::lock;

/// A one-shot gate for [`Fault::Stall`](crate::Fault::Stall). Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: AtomicBool,
    opened: Notify,
    reached: Mutex<bool>,
    reached_changed: Condvar,
    reached_notify: Notify,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets every stalled and future response through.
    pub fn open(&self) {
        self.inner.open.store(true, Ordering::Release);
        self.inner.opened.notify_waiters();
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Resolves once a response has reached the stall point of this gate.
    pub async fn reached(&self) {
        loop {
            let notified = self.inner.reached_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *lock(&self.inner.reached) {
                return;
            }
            notified.await;
        }
    }

    /// Blocks until a response has reached the stall point; false on timeout.
    pub fn wait_reached(&self, timeout: Duration) -> bool {
        let reached = lock(&self.inner.reached);
        let (reached, _) = self
            .inner
            .reached_changed
            .wait_timeout_while(reached, timeout, |reached| !*reached)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *reached
    }

    /// Marks the stall point as reached; called by whatever stalls (the origin's responses,
    /// or a test's own proxy).
    pub fn arrive(&self) {
        *lock(&self.inner.reached) = true;
        self.inner.reached_changed.notify_all();
        self.inner.reached_notify.notify_waiters();
    }

    /// Resolves when the gate opens.
    pub async fn opened(&self) {
        loop {
            let notified = self.inner.opened.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}
