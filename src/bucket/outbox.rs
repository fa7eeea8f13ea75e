//! Uploads behind the writer, for packs in a bucket with `PackDurability::LocalDisk`: local
//! files PUT, and deletions of packs (their markers), in the order they were queued, by one
//! thread of their own.
//!
//! Order is the whole point. A commit's packs are queued at their sync, before the commit; its
//! journal log is queued inside the commit's transaction (so logs queue in commit order) but held
//! back until the commit is known to have happened (`Ticket::ready`) or dropped if it failed
//! (`Ticket::cancel`). The worker takes items strictly from the front and waits at a held-back
//! one, so the bucket always holds a prefix of the commits, each with its packs before its log:
//! what `Journal::reconcile` and a rebuild need.
//!
//! A failed PUT is tried again, with a growing pause, until it succeeds or the outbox is
//! dropped; the files stay on disk (packs in `packs/`, logs in `outbox/`), and the next open
//! uploads what is left before anything else.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{Bucket, Put};
use crate::vfs::Vfs;

/// What happens when an item is in the bucket.
pub(crate) type Done = Box<dyn FnOnce() + Send>;

/// What an item does to the bucket.
enum Action {
    /// PUT the local file, whole (create-only).
    Upload(PathBuf),
    /// PUT these bytes (create-only).
    Write(Bytes),
    /// DELETE the object.
    Delete,
}

struct Item {
    /// The object's key under the prefix.
    key: String,
    action: Action,
    /// Remove the file once uploaded (a log: the outbox's own copy).
    remove_after: bool,
    /// Queued inside a commit that may still fail: not to be uploaded until ready.
    held: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
    /// Bytes, for the backlog figure.
    len: u64,
    done: Option<Done>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    stop: AtomicBool,
    uploaded: AtomicU64,
}

/// The queue and its worker thread.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (items, bytes) = self.backlog();
        write!(f, "Outbox({items} items, {bytes} bytes)")
    }
}

/// A queued item whose commit is not settled yet.
pub(crate) struct Ticket {
    held: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Its commit happened: the item may go up.
    pub(crate) fn ready(self) {
        self.held.store(false, Ordering::Release);
        self.shared.changed.notify_all();
    }

    /// Its commit failed: the item is dropped, never uploaded.
    pub(crate) fn cancel(self) {
        self.cancelled.store(true, Ordering::Release);
        self.held.store(false, Ordering::Release);
        self.shared.changed.notify_all();
    }
}

impl Outbox {
    /// Starts the worker that PUTs queued files into `bucket`, reading them through `vfs`.
    pub(crate) fn start(bucket: Arc<Bucket>, vfs: Arc<dyn Vfs>) -> Outbox {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("lockerstore-outbox".into())
            .spawn(move || work(&s, &bucket, vfs.as_ref()))
            .ok();
        Outbox {
            shared,
            worker: Mutex::new(worker),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `file` to be PUT as `key`; `done` runs once it is in the bucket.
    pub(crate) fn push(&self, key: String, file: PathBuf, len: u64, done: Option<Done>) {
        self.enqueue(key, Action::Upload(file), len, false, false, done);
    }

    /// Queues a create-only PUT of `bytes` as `key` (a deletion marker), behind everything
    /// queued before.
    pub(crate) fn push_write(&self, key: String, bytes: Bytes) {
        let len = bytes.len() as u64;
        self.enqueue(key, Action::Write(bytes), len, false, false, None);
    }

    /// Queues the deletion of `key`, behind everything queued before (the log of the commit
    /// that stopped naming it, among them).
    pub(crate) fn push_delete(&self, key: String) {
        self.enqueue(key, Action::Delete, 0, false, false, None);
    }

    /// Queues `file` (removed once uploaded) to be PUT as `key` once the returned ticket says
    /// its commit happened; `done` runs once it is in the bucket.
    pub(crate) fn push_held(
        &self,
        key: String,
        file: PathBuf,
        len: u64,
        done: Option<Done>,
    ) -> Ticket {
        let (held, cancelled) = self.enqueue(key, Action::Upload(file), len, true, true, done);
        Ticket {
            held,
            cancelled,
            shared: self.shared.clone(),
        }
    }

    fn enqueue(
        &self,
        key: String,
        action: Action,
        len: u64,
        remove_after: bool,
        held: bool,
        done: Option<Done>,
    ) -> (Arc<AtomicBool>, Arc<AtomicBool>) {
        let held = Arc::new(AtomicBool::new(held));
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut q = self.queue();
        q.bytes += len;
        q.items.push_back(Item {
            key,
            action,
            remove_after,
            held: held.clone(),
            cancelled: cancelled.clone(),
            len,
            done,
        });
        drop(q);
        self.shared.changed.notify_all();
        (held, cancelled)
    }

    /// Items and bytes queued, not yet in the bucket.
    pub(crate) fn backlog(&self) -> (u64, u64) {
        let q = self.queue();
        (q.items.len() as u64, q.bytes)
    }

    /// Items uploaded since the start.
    pub(crate) fn uploaded(&self) -> u64 {
        self.shared.uploaded.load(Ordering::Relaxed)
    }

    /// Waits until the queue is empty, or `patience` passed without an upload. Returns whether
    /// it is empty.
    pub(crate) fn drain(&self, patience: Duration) -> bool {
        let mut q = self.queue();
        loop {
            if q.items.is_empty() {
                return true;
            }
            let before = self.uploaded();
            let (guard, timeout) = self
                .shared
                .changed
                .wait_timeout(q, patience)
                .unwrap_or_else(|p| p.into_inner());
            q = guard;
            if timeout.timed_out() && self.uploaded() == before {
                return q.items.is_empty();
            }
        }
    }
}

impl Drop for Outbox {
    /// Waits for the backlog while uploads make progress (a clean close leaves the bucket
    /// current), then stops the worker; what is left stays on disk for the next open.
    fn drop(&mut self) {
        self.drain(Duration::from_secs(5));
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = worker {
            let _ = w.join();
        }
    }
}

fn work(shared: &Shared, bucket: &Bucket, vfs: &dyn Vfs) {
    let mut pause = Duration::from_millis(50);
    loop {
        // The front item, once it is not held back.
        let (key, action, cancelled) = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                match q.items.front() {
                    Some(i) if !i.held.load(Ordering::Acquire) => {
                        let action = match &i.action {
                            Action::Upload(f) => Action::Upload(f.clone()),
                            Action::Write(b) => Action::Write(b.clone()),
                            Action::Delete => Action::Delete,
                        };
                        break (i.key.clone(), action, i.cancelled.clone());
                    }
                    _ => {
                        q = shared
                            .changed
                            .wait_timeout(q, Duration::from_millis(200))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        };
        let outcome = if cancelled.load(Ordering::Acquire) {
            Ok(())
        } else {
            match action {
                Action::Upload(file) => match vfs.read(&file) {
                    // Removed from outside before its upload: nothing to upload (a read of
                    // the pack will report it missing).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(_) => Err(()),
                    Ok(bytes) => bucket
                        .put(&key, Bytes::from(bytes), Put::Create)
                        .map(|_| ())
                        .map_err(|_| ()),
                },
                Action::Write(bytes) => bucket
                    .put(&key, bytes, Put::Create)
                    .map(|_| ())
                    .map_err(|_| ()),
                Action::Delete => bucket.delete(&key).map_err(|_| ()),
            }
        };
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                let item = q.items.pop_front().expect("the front item is ours");
                q.bytes -= item.len;
                drop(q);
                if let Action::Upload(file) = &item.action
                    && (item.remove_after || item.cancelled.load(Ordering::Acquire))
                {
                    let _ = vfs.remove_file(file);
                }
                if let Some(done) = item.done
                    && !item.cancelled.load(Ordering::Acquire)
                {
                    done();
                }
                shared.uploaded.fetch_add(1, Ordering::Relaxed);
                shared.changed.notify_all();
                pause = Duration::from_millis(50);
            }
            Err(_) => {
                // Tried again after a pause (new items do not cut it short); the error is the
                // bucket's, and `backlog` shows that nothing moves.
                drop(q);
                let until = std::time::Instant::now() + pause;
                while std::time::Instant::now() < until && !shared.stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
