//! Group commit: the metadata changes of puts that finish at the same time go into one durable
//! redb transaction, so they share its fsync. Each put still returns only once its own changes
//! are durable.
//!
//! The first put to arrive while no commit runs becomes the leader: it takes every queued
//! request, applies them in arrival order in one transaction, commits, hands each request its
//! result, and repeats while requests keep arriving; the others wait for their result. If the
//! shared transaction fails, every request of the batch is retried in a transaction of its own,
//! so one put's failure (say, damaged metadata it touches) never fails another put.

use std::sync::{Arc, Condvar, Mutex};

use crate::error::Result;
use crate::ingest::PutCommit;
use crate::meta::{MetaStore, write_with};

#[derive(Debug)]
struct Slot {
    request: PutCommit,
    result: Mutex<Option<Result<bool>>>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Arc<Slot>>,
    leader: bool,
}

/// The group-commit queue of a store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
}

impl GroupCommit {
    /// Commits one put's changes, possibly together with others'; returns whether it replaced a
    /// track.
    pub(crate) fn commit(&self, meta: &dyn MetaStore, request: PutCommit) -> Result<bool> {
        let slot = Arc::new(Slot {
            request,
            result: Mutex::new(None),
            ready: Condvar::new(),
        });
        let mut q = self.queue.lock().expect("commit queue lock");
        q.waiting.push(slot.clone());
        if q.leader {
            drop(q);
            let mut result = slot.result.lock().expect("slot lock");
            while result.is_none() {
                result = slot.ready.wait(result).expect("slot lock");
            }
            return result.take().expect("checked");
        }
        q.leader = true;
        loop {
            let batch = std::mem::take(&mut q.waiting);
            if batch.is_empty() {
                q.leader = false;
                break;
            }
            drop(q);
            run_batch(meta, &batch);
            q = self.queue.lock().expect("commit queue lock");
        }
        drop(q);
        slot.result
            .lock()
            .expect("slot lock")
            .take()
            .expect("the leader ran its own request")
    }
}

fn finish(slot: &Slot, result: Result<bool>) {
    *slot.result.lock().expect("slot lock") = Some(result);
    slot.ready.notify_all();
}

fn run_batch(meta: &dyn MetaStore, batch: &[Arc<Slot>]) {
    if batch.len() > 1 {
        let together = write_with(meta, |w| {
            batch
                .iter()
                .map(|s| s.request.apply(w))
                .collect::<Result<Vec<bool>>>()
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
