//! The uploads in progress: their records and staging files under `<store>/server/uploads/`,
//! the per-user limits, expiry, and taking them up again at start (see the module above for
//! the protocol).

use super::*;

/// The limits of resumable uploads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// An upload not touched for this long is removed (finished ones too).
    pub expiry: Duration,
    /// Most bytes of one upload (`Tus-Max-Size`).
    pub max_size: u64,
    /// Most unfinished uploads one user may have open.
    pub max_open_per_user: usize,
    /// Most finished uploads a user's records keep (each answers a client that lost the last
    /// answer until it expires); a new upload past it drops that user's oldest finished one.
    pub max_finished_per_user: usize,
}

/// The record of one upload, as `<id>.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) version: u32,
    pub(super) user: String,
    pub(super) key: String,
    pub(super) length: u64,
    /// Bytes synced and acknowledged.
    pub(super) offset: u64,
    /// `Upload-Metadata` as the client sent it (`HEAD` repeats it).
    pub(super) metadata: String,
    /// Unix seconds.
    pub(super) created: u64,
    /// Unix seconds of the last request that used the upload.
    pub(super) touched: u64,
    /// Once the put committed: the track's fingerprint (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) done: Option<String>,
}

/// What changes over an upload's life.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    pub(super) offset: u64,
    pub(super) done: Option<String>,
}

/// One upload in memory.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) id: String,
    pub(super) user: String,
    pub(super) key: String,
    pub(super) length: u64,
    pub(super) metadata: String,
    pub(super) created: u64,
    pub(super) touched: AtomicU64,
    pub(super) progress: Mutex<Progress>,
    /// Held by the one request that may change the upload (a `PATCH`, a `DELETE`, expiry).
    pub(super) busy: AtomicBool,
    /// Set, under `busy`, once the upload was removed.
    pub(super) gone: AtomicBool,
}

impl Upload {
    pub(super) fn progress(&self) -> Progress {
        self.progress.lock().expect("upload lock").clone()
    }

    pub(super) fn set_progress(&self, p: Progress) {
        *self.progress.lock().expect("upload lock") = p;
    }

    pub(super) fn touch(&self) {
        self.touched.store(unix_now(), Ordering::Relaxed);
    }

    pub(super) fn claim(self: &Arc<Self>) -> Option<Claim> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim(self.clone()))
    }

    pub(super) fn record(&self, p: &Progress) -> Record {
        Record {
            version: 1,
            user: self.user.clone(),
            key: self.key.clone(),
            length: self.length,
            offset: p.offset,
            metadata: self.metadata.clone(),
            created: self.created,
            touched: self.touched.load(Ordering::Relaxed),
            done: p.done.clone(),
        }
    }
}

/// The right to change one upload; released when dropped.
pub(super) struct Claim(pub(super) Arc<Upload>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The resumable uploads of one server.
#[derive(Debug)]
pub struct Uploads {
    pub(super) dir: PathBuf,
    pub(super) limits: Limits,
    pub(super) all: Mutex<HashMap<String, Arc<Upload>>>,
    /// Uploads found complete at start whose put had not committed.
    pub(super) pending: Mutex<Vec<Arc<Upload>>>,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn random_id() -> io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub(super) fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An I/O failure of the staging area as the client sees it: never a server path.
pub(super) fn io_error(e: io::Error) -> ApiError {
    if e.kind() == io::ErrorKind::StorageFull {
        tracing::error!(error = %e, "upload staging full");
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the server is out of space",
        )
    } else {
        tracing::error!(error = %e, "upload staging failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

pub(super) fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such upload")
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Runs blocking work (files, the store) on tokio's blocking pool.
pub(super) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs the
/// directory: a crash leaves the old or the new file.
pub(super) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// What the store says about a user before an upload is created.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Usage {
    pub(super) max_bytes: Option<u64>,
    pub(super) counted_bytes: u64,
    pub(super) max_tracks: Option<u64>,
    pub(super) counted_tracks: u64,
    /// The size of the track the upload would replace.
    pub(super) replaces: Option<u64>,
}

impl Usage {
    /// Refuses an upload of `length` bytes that cannot fit, counting the user's other open
    /// uploads (`staged` bytes) as stored. A precheck: the put checks exactly at the end.
    pub(super) fn check(&self, length: u64, staged: u64) -> Result<(), ApiError> {
        let over = |m: String| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m);
        if let Some(max) = self.max_bytes {
            let free = max
                .saturating_sub(self.counted_bytes)
                .saturating_add(self.replaces.unwrap_or(0))
                .saturating_sub(staged);
            if length > free {
                return Err(over(format!(
                    "over quota: {free} bytes are free for new uploads, {length} asked for"
                )));
            }
        }
        if let Some(max) = self.max_tracks
            && self.replaces.is_none()
            && self.counted_tracks >= max
        {
            return Err(over(format!("over quota: at most {max} tracks")));
        }
        Ok(())
    }
}

impl Uploads {
    /// Opens the staging directory `dir` (created if missing) and takes up the uploads a
    /// previous run left: a `.bin` longer than its recorded offset is cut back to it, leftovers
    /// (temporary files, a `.bin` without a record, an unreadable record) are removed, expired
    /// uploads too.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Uploads> {
        fs::create_dir_all(dir)?;
        let uploads = Uploads {
            dir: dir.to_owned(),
            limits,
            all: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp") {
                fs::remove_file(dir.join(name))?;
            } else if let Some(id) = name.strip_suffix(".json")
                && is_id(id)
            {
                ids.push(id.to_owned());
            } else if let Some(id) = name.strip_suffix(".bin")
                && is_id(id)
                && !dir.join(format!("{id}.json")).exists()
            {
                fs::remove_file(dir.join(name))?;
            }
        }
        for id in ids {
            if let Err(e) = uploads.take_up(&id) {
                tracing::warn!(upload = %id, error = %e, "dropping an unusable upload");
                uploads.remove_files(&id);
            }
        }
        Ok(uploads)
    }

    pub(super) fn take_up(&self, id: &str) -> io::Result<()> {
        let record: Record =
            serde_json::from_slice(&fs::read(self.json(id))?).map_err(io::Error::other)?;
        if UserId::new(&record.user).is_err()
            || TrackKey::new(&record.key).is_err()
            || record.offset > record.length
        {
            return Err(io::Error::other("an invalid record"));
        }
        let up = Arc::new(Upload {
            id: id.to_owned(),
            user: record.user.clone(),
            key: record.key.clone(),
            length: record.length,
            metadata: record.metadata.clone(),
            created: record.created,
            touched: AtomicU64::new(record.touched),
            progress: Mutex::new(Progress {
                offset: record.offset,
                done: record.done.clone(),
            }),
            busy: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        });
        if self.expired(&up) {
            tracing::info!(upload = %id, "removing an expired upload");
            self.remove_files(id);
            return Ok(());
        }
        if record.done.is_some() {
            // Finished before the stop: only its record is kept, for clients asking late.
            match fs::remove_file(self.bin(id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let file = OpenOptions::new().write(true).open(self.bin(id))?;
            let len = file.metadata()?.len();
            if len > record.offset {
                // Written but never acknowledged: the client sends it again.
                file.set_len(record.offset)?;
                file.sync_all()?;
            } else if len < record.offset {
                tracing::warn!(upload = %id, recorded = record.offset, len,
                    "staged bytes lost: the upload resumes from what is there");
                let p = Progress {
                    offset: len,
                    done: None,
                };
                self.save(&up, &p)?;
                up.set_progress(p);
            }
            if up.progress().offset == up.length {
                self.pending.lock().expect("uploads lock").push(up.clone());
            }
        }
        self.all
            .lock()
            .expect("uploads lock")
            .insert(id.to_owned(), up);
        Ok(())
    }

    pub(super) fn bin(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bin"))
    }

    pub(super) fn json(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub(super) fn save(&self, up: &Upload, p: &Progress) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&up.record(p)).map_err(io::Error::other)?;
        write_atomic(&self.dir, &self.json(&up.id), &bytes)
    }

    pub(super) fn remove_files(&self, id: &str) {
        for path in [self.bin(id), self.json(id)] {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!(upload = %id, error = %e, "removing an upload's file failed");
            }
        }
    }

    pub(super) fn expired(&self, up: &Upload) -> bool {
        unix_now().saturating_sub(up.touched.load(Ordering::Relaxed))
            >= self.limits.expiry.as_secs().max(1)
    }

    pub(super) fn expires_at(&self, up: &Upload) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(up.touched.load(Ordering::Relaxed))
            + self.limits.expiry.max(Duration::from_secs(1))
    }

    /// `user`'s upload `id`: `None` when it does not exist, is someone else's or expired.
    pub(super) fn get(&self, id: &str, user: &UserId) -> Option<Arc<Upload>> {
        let up = self.all.lock().expect("uploads lock").get(id).cloned()?;
        (up.user == user.as_str() && !self.expired(&up)).then_some(up)
    }

    /// Creates an upload (blocking: it makes its files). Refuses one over the user's limits:
    /// their open uploads count as stored.
    pub(super) fn create(
        &self,
        user: &UserId,
        key: &TrackKey,
        length: u64,
        metadata: String,
        usage: &Usage,
    ) -> Result<Arc<Upload>, ApiError> {
        let id = random_id().map_err(io_error)?;
        let now = unix_now();
        let up = Arc::new(Upload {
            id: id.clone(),
            user: user.as_str().to_owned(),
            key: key.as_str().to_owned(),
            length,
            metadata,
            created: now,
            touched: AtomicU64::new(now),
            progress: Mutex::new(Progress {
                offset: 0,
                done: None,
            }),
            busy: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        });
        let evicted = {
            let mut all = self.all.lock().expect("uploads lock");
            let mine: Vec<_> = all
                .values()
                .filter(|u| {
                    u.user == user.as_str() && u.progress().done.is_none() && !self.expired(u)
                })
                .collect();
            if mine.len() >= self.limits.max_open_per_user {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "at most {} unfinished uploads may be open at once",
                        self.limits.max_open_per_user
                    ),
                ));
            }
            let staged = mine
                .iter()
                .fold(0u64, |sum, u| sum.saturating_add(u.length));
            usage.check(length, staged)?;
            let finished: Vec<&Arc<Upload>> = all
                .values()
                .filter(|u| u.user == user.as_str() && u.progress().done.is_some())
                .collect();
            let evicted = (finished.len() >= self.limits.max_finished_per_user)
                .then(|| {
                    finished
                        .iter()
                        .min_by_key(|u| u.created)
                        .and_then(|u| u.claim())
                })
                .flatten();
            all.insert(id.clone(), up.clone());
            evicted
        };
        if let Some(old) = evicted {
            tracing::debug!(upload = %old.0.id, "dropping a user's oldest finished upload record");
            self.remove(&old);
        }
        let made = File::create_new(self.bin(&id))
            .and_then(|f| f.sync_all())
            .and_then(|()| self.save(&up, &up.progress()));
        if let Err(e) = made {
            self.all.lock().expect("uploads lock").remove(&id);
            self.remove_files(&id);
            return Err(io_error(e));
        }
        Ok(up)
    }

    /// Removes a claimed upload: its record, its files.
    pub(super) fn remove(&self, claim: &Claim) {
        claim.0.gone.store(true, Ordering::Release);
        self.all.lock().expect("uploads lock").remove(&claim.0.id);
        self.remove_files(&claim.0.id);
    }

    /// Removes every expired upload no request is using; returns how many.
    pub fn sweep(&self) -> usize {
        let expired: Vec<Claim> = self
            .all
            .lock()
            .expect("uploads lock")
            .values()
            .filter(|u| self.expired(u))
            .filter_map(|u| u.claim())
            .collect();
        for claim in &expired {
            tracing::info!(upload = %claim.0.id, "removing an expired upload");
            self.remove(claim);
        }
        expired.len()
    }

    /// How often [`Uploads::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}
