//! Live control of a running loop: pause, resume, checkpoint now, a new learning rate.
//!
//! The loop looks at its [`LiveControl`] between two steps, so every action takes effect at a
//! step boundary and is reported there ([`super::TrainEvent::Controlled`]). A paused loop
//! waits on a future woken by the next request (or by [`LiveControl::interrupt`], for a
//! cancel): no thread, no timer, so it also works under `pollster` and in a browser. The
//! model, the optimizer and the data order stay as they were, so a resumed run takes exactly
//! the steps an uninterrupted one would.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use kiln_proto::protocol::{ControlAction, LrChange, lr_at};

/// A handle to a running loop's controls; clones share it.
#[derive(Debug, Clone, Default)]
pub struct LiveControl(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    /// Requests not yet seen by the loop, oldest first.
    pending: VecDeque<ControlAction>,
    /// Learning rates set so far (replayed from earlier attempts, then live), step order.
    lr_changes: Vec<LrChange>,
    /// Set by [`LiveControl::interrupt`]; cleared by the wait it ends.
    interrupted: bool,
    waker: Option<Waker>,
}

impl LiveControl {
    /// Controls that replay `lr_changes` (made on an earlier attempt, at their steps) and
    /// apply `controls` before the first step.
    pub fn new(lr_changes: Vec<LrChange>, controls: Vec<ControlAction>) -> LiveControl {
        let mut lr_changes = lr_changes;
        lr_changes.sort_by_key(|c| c.step);
        LiveControl(Arc::new(Mutex::new(Inner {
            pending: controls.into(),
            lr_changes,
            interrupted: false,
            waker: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind; go on with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask for `action` between the next two steps (it also wakes a paused loop).
    pub fn request(&self, action: ControlAction) {
        let mut inner = self.lock();
        inner.pending.push_back(action);
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    /// Wake a paused loop so it looks at its cancel token.
    pub fn interrupt(&self) {
        let mut inner = self.lock();
        inner.interrupted = true;
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    /// The learning-rate changes so far, step order.
    pub fn lr_changes(&self) -> Vec<LrChange> {
        self.lock().lr_changes.clone()
    }

    pub(crate) fn take(&self) -> Vec<ControlAction> {
        self.lock().pending.drain(..).collect()
    }

    /// The base learning rate of the step after `step` steps.
    pub(crate) fn lr_at(&self, step: u64, spec_lr: f64) -> f64 {
        lr_at(&self.lock().lr_changes, step, spec_lr)
    }

    /// A live change at `step`: changes replayed for later steps belonged to the timeline it
    /// replaces.
    pub(crate) fn record_lr(&self, step: u64, lr: f64) {
        let mut inner = self.lock();
        inner.lr_changes.retain(|c| c.step < step);
        inner.lr_changes.push(LrChange { step, lr });
    }

    /// Ready at the next request or interrupt.
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

/// See [`LiveControl::wait`].
pub(crate) struct Wait<'a>(&'a LiveControl);

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.0.lock();
        if !inner.pending.is_empty() || std::mem::take(&mut inner.interrupted) {
            Poll::Ready(())
        } else {
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}
