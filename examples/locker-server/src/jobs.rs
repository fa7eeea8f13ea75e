//! Maintenance jobs an operator starts over the API: GC, and a migration to a license mode.
//! One runs at a time, on a thread of its own, while uploads and streams go on (the engine's
//! GC and migration run online); its progress is polled. The last [`KEPT`] jobs are listed.
//!
//! A job killed with the server (a stop, a crash) leaves the store as the engine's crash
//! analysis says: GC and migration are crash-safe, and a migration resumes when run again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use lockerstore::{GcOptions, LicenseMode, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::admin::AdminError;

/// Jobs kept in the list (running or finished).
const KEPT: usize = 16;

/// What to run.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum JobRequest {
    /// Free garbage and compact packs.
    Gc,
    /// Set the license mode, then bring the layout in line with it.
    Migrate {
        #[serde(deserialize_with = "mode")]
        mode: LicenseMode,
    },
}

fn mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LicenseMode, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: u64,
    pub kind: &'static str,
    pub mode: Option<&'static str>,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    /// GC: `entries` then `packs`; migration: `tracks`.
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    pub report: Option<Value>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Newest first.
    jobs: VecDeque<Job>,
    running: bool,
}

/// The server's jobs.
#[derive(Debug, Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jobs {
    /// Every kept job, newest first.
    pub fn list(&self) -> Vec<Job> {
        self.inner
            .lock()
            .expect("jobs lock")
            .jobs
            .iter()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<Job> {
        self.list().into_iter().find(|j| j.id == id)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(job) = inner.jobs.iter_mut().find(|j| j.id == id) {
            f(job);
        }
    }

    /// Starts `request` on `store`; `Busy` while another job runs.
    pub fn start(self: &Arc<Self>, store: Store, request: JobRequest) -> Result<Job, AdminError> {
        let job = {
            let mut inner = self.inner.lock().expect("jobs lock");
            if inner.running {
                return Err(AdminError::Busy(
                    "another job runs: wait for it to end".into(),
                ));
            }
            inner.next_id += 1;
            let (kind, mode, phase) = match request {
                JobRequest::Gc => ("gc", None, "entries"),
                JobRequest::Migrate { mode } => ("migrate", Some(mode.as_str()), "tracks"),
            };
            let job = Job {
                id: inner.next_id,
                kind,
                mode,
                state: "running",
                phase,
                done: 0,
                total: 0,
                bytes_done: 0,
                bytes_total: 0,
                started_at: now(),
                finished_at: None,
                error: None,
                report: None,
            };
            inner.running = true;
            inner.jobs.push_front(job.clone());
            inner.jobs.truncate(KEPT);
            job
        };
        let jobs = Arc::clone(self);
        let id = job.id;
        let spawned = std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                // Whatever happens (even a panic in the engine), the job ends and the next
                // one may start: the guard records the outcome when dropped.
                let mut ending = Ending {
                    jobs: &jobs,
                    id,
                    outcome: None,
                };
                ending.outcome = Some(jobs.run(&store, id, request));
            });
        if let Err(e) = spawned {
            self.update(id, |j| {
                j.state = "failed";
                j.error = Some(format!("could not start: {e}"));
            });
            self.inner.lock().expect("jobs lock").running = false;
            return Err(AdminError::Io(e));
        }
        Ok(job)
    }

    fn run(&self, store: &Store, id: u64, request: JobRequest) -> lockerstore::Result<Value> {
        match request {
            JobRequest::Gc => {
                let r = store.gc(GcOptions::default(), &mut |p| {
                    self.update(id, |j| {
                        (j.phase, j.done, j.total) = (p.phase, p.done, p.total);
                    });
                })?;
                Ok(json!({
                    "entries_removed": r.entries_removed,
                    "entries_pinned": r.entries_pinned,
                    "packs_deleted": r.packs_deleted,
                    "packs_rewritten": r.packs_rewritten,
                    "bytes_copied": r.bytes_copied,
                    "packs_skipped_for_space": r.packs_skipped_for_space,
                    "pack_bytes_before": r.pack_bytes_before,
                    "pack_bytes_after": r.pack_bytes_after,
                    "bytes_reclaimed": r.bytes_reclaimed(),
                }))
            }
            JobRequest::Migrate { mode } => {
                store.set_mode(mode)?;
                let r = store.migrate(&mut |p| {
                    self.update(id, |j| {
                        (j.done, j.total) = (p.tracks_done, p.tracks_total);
                        (j.bytes_done, j.bytes_total) = (p.bytes_done, p.bytes_total);
                    });
                })?;
                Ok(json!({
                    "mode": r.mode.map(LicenseMode::as_str),
                    "tracks_migrated": r.tracks_migrated,
                    "records_promoted": r.records_promoted,
                    "records_copied": r.records_copied,
                    "bytes_written": r.bytes_written,
                    "rounds": r.rounds,
                }))
            }
        }
    }
}

/// Ends job `id` when dropped, in one critical section, so a poller that sees the job ended
/// may start the next at once: records the outcome (none: the job panicked) and its end time,
/// and frees the slot.
struct Ending<'a> {
    jobs: &'a Jobs,
    id: u64,
    outcome: Option<lockerstore::Result<Value>>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.take();
        let mut inner = self.jobs.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = inner.jobs.iter_mut().find(|j| j.id == self.id) {
            j.finished_at = Some(now());
            match outcome {
                Some(Ok(report)) => {
                    j.state = "done";
                    j.report = Some(report);
                }
                Some(Err(e)) => {
                    tracing::error!(job = self.id, error = %e, "job failed");
                    j.state = "failed";
                    j.error = Some(e.to_string());
                }
                None => {
                    tracing::error!(job = self.id, "job panicked");
                    j.state = "failed";
                    j.error = Some("the job stopped unexpectedly: see the server's log".into());
                }
            }
        }
        inner.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(jobs: &Jobs, id: u64) -> Job {
        for _ in 0..2000 {
            let j = jobs.get(id).unwrap();
            if j.state != "running" {
                return j;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("job {id} did not end");
    }

    #[test]
    fn jobs_run_one_at_a_time_and_report() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), lockerstore::Options::default()).unwrap();
        let alice = lockerstore::UserId::new("alice").unwrap();
        let key = lockerstore::TrackKey::new("a.bin").unwrap();
        store.put(&alice, &key, &[7u8; 300_000][..]).unwrap();
        let jobs = Arc::new(Jobs::default());
        let request: JobRequest =
            serde_json::from_str(r#"{"kind":"migrate","mode":"single-master"}"#).unwrap();
        let first = jobs.start(store.clone(), request).unwrap();
        let second = jobs.start(store.clone(), JobRequest::Gc);
        // The migration may already be over; if not, a second job is refused.
        if jobs.get(first.id).unwrap().state == "running" {
            assert!(matches!(second, Err(AdminError::Busy(_))));
        }
        let done = wait(&jobs, first.id);
        assert_eq!(done.state, "done", "{done:?}");
        assert_eq!(done.report.as_ref().unwrap()["mode"], "single-master");
        assert_eq!(store.mode(), LicenseMode::SingleMaster);
        if let Ok(gc) = second {
            wait(&jobs, gc.id);
        }
        let gc = jobs.start(store.clone(), JobRequest::Gc).unwrap();
        let gc = wait(&jobs, gc.id);
        assert_eq!(gc.state, "done");
        assert!(gc.report.unwrap()["pack_bytes_after"].is_u64());
        assert_eq!(jobs.list()[0].id, gc.id, "newest first");
        assert!(serde_json::from_str::<JobRequest>(r#"{"kind":"migrate","mode":"x"}"#).is_err());
        assert!(serde_json::from_str::<JobRequest>(r#"{"kind":"format"}"#).is_err());
    }
}
