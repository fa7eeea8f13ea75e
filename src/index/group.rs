//! Group commit: the metadata changes of puts that finish at the same time go into one durable
//! redb transaction, so they share its fsync. Each put still returns only once its own changes
//! are durable.
//!
//! The first put to arrive while no commit runs becomes the leader: it takes every queued
//! request, applies them in arrival order in one transaction and commits, hands each request its
//! result, then passes the leadership to the oldest request that arrived meanwhile (so no put
//! waits for more than the batch before its own), or ends it if none did. If the shared
//! transaction fails, every request of the batch is retried in a transaction of its own, so one
//! put's failure (say, damaged metadata it touches) never fails another put.

use std::sync::{Arc, Condvar, Mutex};

use crate::error::Result;
use crate::index::{MetaStore, MetaWrite, write_with};

/// One writer's changes, applied inside a shared transaction. `apply` may run twice: once in the
/// batch and, if the batch fails, again alone; each run starts from a transaction that has none
/// of its earlier changes.
pub(crate) trait Request: Send + Sync + std::fmt::Debug {
    /// What the requester learns from its commit.
    type Output: Send + std::fmt::Debug;
    fn apply(&self, w: &mut dyn MetaWrite) -> Result<Self::Output>;
}

#[derive(Debug)]
struct SlotState<O> {
    result: Option<Result<O>>,
    /// Set when the leadership passes to this request.
    lead: bool,
}

#[derive(Debug)]
struct Slot<R: Request> {
    request: R,
    state: Mutex<SlotState<R::Output>>,
    wake: Condvar,
}

#[derive(Debug)]
struct Queue<R: Request> {
    waiting: Vec<Arc<Slot<R>>>,
    leader: bool,
}

/// The group-commit queue of a store.
#[derive(Debug)]
pub(crate) struct GroupCommit<R: Request> {
    queue: Mutex<Queue<R>>,
}

impl<R: Request> Default for GroupCommit<R> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                leader: false,
            }),
        }
    }
}

impl<R: Request> GroupCommit<R> {
    /// Commits one request's changes, possibly together with others'; returns its output.
    pub(crate) fn commit(&self, meta: &dyn MetaStore, request: R) -> Result<R::Output> {
        let slot = Arc::new(Slot {
            request,
            state: Mutex::new(SlotState {
                result: None,
                lead: false,
            }),
            wake: Condvar::new(),
        });
        let mut q = self.queue.lock().expect("commit queue lock");
        q.waiting.push(slot.clone());
        let lead_now = !q.leader;
        q.leader = true;
        drop(q);
        if !lead_now {
            let mut st = slot.state.lock().expect("slot lock");
            while st.result.is_none() && !st.lead {
                st = slot.wake.wait(st).expect("slot lock");
            }
            if let Some(r) = st.result.take() {
                return r;
            }
        }
        // Leader: commit everything queued (this request included), then hand over.
        let mut q = self.queue.lock().expect("commit queue lock");
        let batch = std::mem::take(&mut q.waiting);
        drop(q);
        run_batch(meta, &batch);
        let mut q = self.queue.lock().expect("commit queue lock");
        match q.waiting.first() {
            Some(next) => {
                next.state.lock().expect("slot lock").lead = true;
                next.wake.notify_all();
            }
            None => q.leader = false,
        }
        drop(q);
        slot.state
            .lock()
            .expect("slot lock")
            .result
            .take()
            .expect("the leader's own request was in its batch")
    }
}

fn finish<R: Request>(slot: &Slot<R>, result: Result<R::Output>) {
    slot.state.lock().expect("slot lock").result = Some(result);
    slot.wake.notify_all();
}

fn run_batch<R: Request>(meta: &dyn MetaStore, batch: &[Arc<Slot<R>>]) {
    if batch.len() > 1 {
        let together = write_with(meta, |w| {
            batch
                .iter()
                .map(|s| s.request.apply(w))
                .collect::<Result<Vec<R::Output>>>()
        });
        if let Ok(replaced) = together {
            for (s, r) in batch.iter().zip(replaced) {
                finish(s, Ok(r));
            }
            return;
        }
    }
    for s in batch {
        finish(s, write_with(meta, |w| s.request.apply(w)));
    }
}
