//! redb implementation of the metadata tables.

use std::cell::OnceCell;
use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};

use super::{MetaRead, MetaStore, MetaWrite, stored_track_key, stored_user_id};
use crate::error::{Error, Result};
use crate::format::{
    CHUNK_ENTRY_LEN, ChunkEntry, PACK_ROW_LEN, PackRow, QUOTA_ROW_LEN, QuotaRow, TrackRecord,
    USER_ROW_LEN, UserRow,
};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};
use crate::index::filter::ChunkFilter;
#[cfg(feature = "object-store")]
use crate::index::journal::{MetaOp, node_local};
use crate::names::{TrackKey, UserId};
use crate::vfs::{RedbBackend, Vfs};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const USERS: TableDefinition<&str, [u8; USER_ROW_LEN]> = TableDefinition::new("users");
const USER_NAMES: TableDefinition<u64, &str> = TableDefinition::new("user_names");
const TRACKS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("tracks");
const CHUNKS: TableDefinition<(u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]> =
    TableDefinition::new("chunks");
/// (audio fingerprint, user no, key) -> (): which tracks hold which recording.
const RECORDINGS: TableDefinition<([u8; 32], u64, &str), ()> = TableDefinition::new("recordings");

type ChunkTable = ReadOnlyTable<(u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]>;

const PACKS: TableDefinition<u64, [u8; PACK_ROW_LEN]> = TableDefinition::new("packs");
const QUOTAS: TableDefinition<u64, [u8; QUOTA_ROW_LEN]> = TableDefinition::new("quotas");
const QUOTA_EXEMPT: TableDefinition<(u64, &str), ()> = TableDefinition::new("quota_exempt");

/// Runs a redb call, turning a panic into `Corrupted`. redb checks page checksums only in
/// repair and `check_integrity`, so a damaged page can reach an `unreachable!` inside it; the
/// crate's policy is that damaged bytes give an error, never a crash.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::corrupted(format!(
                "metadata: the database failed while {what} (damaged page?): {msg}"
            )))
        }
    }
}

/// Metadata in one redb file, reached through the I/O seam.
#[derive(Debug)]
pub(crate) struct RedbMeta {
    db: Arc<Database>,
    /// Told every chunk key before the transaction that writes it commits.
    filter: std::sync::OnceLock<Arc<ChunkFilter>>,
}

impl RedbMeta {
    /// Opens (or creates) the database file and makes sure every table exists.
    pub(crate) fn open(vfs: &dyn Vfs, path: &Path, create: bool) -> Result<RedbMeta> {
        let file = vfs
            .open_rw(path, create)
            .map_err(|e| Error::io("open", path, e))?;
        // redb would initialise an empty file as a new database; an existing store's metadata
        // is never empty, so an empty file is a truncated one.
        if !create && file.len().map_err(|e| Error::io("stat", path, e))? == 0 {
            return Err(Error::corrupted(format!(
                "{} is empty (truncated to 0 bytes)",
                path.display()
            )));
        }
        let backend = RedbBackend { file };
        guarded("opening", || {
            let db = Database::builder()
                .set_cache_size(64 << 20)
                .create_with_backend(backend)?;
            let txn = db.begin_write()?;
            {
                txn.open_table(STATE)?;
                txn.open_table(COUNTERS)?;
                txn.open_table(USERS)?;
                txn.open_table(USER_NAMES)?;
                txn.open_table(TRACKS)?;
                txn.open_table(CHUNKS)?;
                txn.open_table(PACKS)?;
                txn.open_table(RECORDINGS)?;
                txn.open_table(QUOTAS)?;
                txn.open_table(QUOTA_EXEMPT)?;
            }
            txn.commit()?;
            Ok(RedbMeta {
                db: Arc::new(db),
                filter: Default::default(),
            })
        })
    }
}

impl MetaStore for RedbMeta {
    fn read(&self) -> Result<Box<dyn MetaRead>> {
        guarded("starting a read", || {
            Ok(Box::new(RedbRead {
                txn: self.db.begin_read()?,
                chunks: OnceCell::new(),
                tracks: OnceCell::new(),
            }) as Box<dyn MetaRead>)
        })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()> {
        guarded("writing", || self.write_unguarded(f))
    }

    fn watch_chunks(&self, filter: Arc<ChunkFilter>) {
        // Set once, when the store opens.
        let _ = self.filter.set(filter);
    }
}

impl RedbMeta {
    fn write_unguarded(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Error::Metadata(e.to_string()))?;
        let outcome = {
            let mut w = RedbWrite::new(&txn, self.filter.get().map(|f| &**f))?;
            f(&mut w)
        };
        match outcome {
            Ok(()) => {
                txn.commit()?;
                Ok(())
            }
            Err(e) => {
                txn.abort()?;
                Err(e)
            }
        }
    }
}

/// The tables of one snapshot or transaction, for `dump`.
#[cfg(feature = "object-store")]
struct Tables<'a, S, C, U, N, T, K, P, R, Q, E> {
    state: &'a S,
    counters: &'a C,
    users: &'a U,
    user_names: &'a N,
    tracks: &'a T,
    chunks: &'a K,
    packs: &'a P,
    recordings: &'a R,
    quotas: &'a Q,
    quota_exempt: &'a E,
}

#[cfg(feature = "object-store")]
impl<S, C, U, N, T, K, P, R, Q, E> Tables<'_, S, C, U, N, T, K, P, R, Q, E>
where
    S: ReadableTable<&'static str, &'static [u8]>,
    C: ReadableTable<&'static str, u64>,
    U: ReadableTable<&'static str, [u8; USER_ROW_LEN]>,
    N: ReadableTable<u64, &'static str>,
    T: ReadableTable<(u64, &'static str), &'static [u8]>,
    K: ReadableTable<(u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]>,
    P: ReadableTable<u64, [u8; PACK_ROW_LEN]>,
    R: ReadableTable<([u8; 32], u64, &'static str), ()>,
    Q: ReadableTable<u64, [u8; QUOTA_ROW_LEN]>,
    E: ReadableTable<(u64, &'static str), ()>,
{
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        for item in self.state.iter()? {
            let (k, v) = item?;
            if !node_local(k.value()) {
                f(MetaOp::SetState(k.value().to_owned(), v.value().to_vec()))?;
            }
        }
        for item in self.counters.iter()? {
            let (k, v) = item?;
            f(MetaOp::SetCounter(k.value().to_owned(), v.value()))?;
        }
        for item in self.users.iter()? {
            let (k, v) = item?;
            f(MetaOp::PutUser(k.value().to_owned(), v.value()))?;
        }
        for item in self.user_names.iter()? {
            let (k, v) = item?;
            f(MetaOp::PutUserName(k.value(), v.value().to_owned()))?;
        }
        for item in self.tracks.iter()? {
            let (k, v) = item?;
            let (user, key) = k.value();
            f(MetaOp::PutTrack(user, key.to_owned(), v.value().to_vec()))?;
        }
        for item in self.chunks.iter()? {
            let (k, v) = item?;
            let (domain, id) = k.value();
            f(MetaOp::PutChunk(domain, id, v.value()))?;
        }
        for item in self.packs.iter()? {
            let (k, v) = item?;
            f(MetaOp::PutPack(k.value(), v.value()))?;
        }
        for item in self.recordings.iter()? {
            let (k, _) = item?;
            let (fp, user, key) = k.value();
            f(MetaOp::PutRecording(fp, user, key.to_owned()))?;
        }
        for item in self.quotas.iter()? {
            let (k, v) = item?;
            f(MetaOp::PutQuota(k.value(), v.value()))?;
        }
        for item in self.quota_exempt.iter()? {
            let (k, _) = item?;
            let (user, key) = k.value();
            f(MetaOp::SetQuotaExempt(user, key.to_owned(), true))?;
        }
        Ok(())
    }
}

fn decode_chunk_key(k: (u64, [u8; 32])) -> Result<(Domain, ChunkId)> {
    let d = Domain::from_u64(k.0).ok_or_else(|| Error::corrupted("chunk key: unknown domain"))?;
    Ok((d, ChunkId(k.1)))
}

// The read side is shared by snapshots and write transactions through these helpers.
fn get_state(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(t.get(key)?.map(|v| v.value().to_vec()))
}

fn get_counter(t: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(t.get(key)?.map(|v| v.value()).unwrap_or(0))
}

fn get_user(
    t: &impl ReadableTable<&'static str, [u8; USER_ROW_LEN]>,
    id: &UserId,
) -> Result<Option<UserRow>> {
    Ok(t.get(id.as_str())?.map(|v| UserRow::decode(&v.value())))
}

fn get_user_name(t: &impl ReadableTable<u64, &'static str>, no: UserNo) -> Result<Option<UserId>> {
    match t.get(no.0)? {
        Some(v) => Ok(Some(stored_user_id(v.value())?)),
        None => Ok(None),
    }
}

fn all_users(
    t: &impl ReadableTable<&'static str, [u8; USER_ROW_LEN]>,
) -> Result<Vec<(String, UserRow)>> {
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_owned(), UserRow::decode(&v.value())));
    }
    Ok(out)
}

fn get_track(
    t: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    user: UserNo,
    key: &TrackKey,
) -> Result<Option<TrackRecord>> {
    match t.get((user.0, key.as_str()))? {
        Some(v) => Ok(Some(TrackRecord::decode(v.value())?)),
        None => Ok(None),
    }
}

fn tracks_of(
    t: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    user: UserNo,
) -> Result<Vec<(TrackKey, TrackRecord)>> {
    let mut out = Vec::new();
    for item in t.range((user.0, "")..(user.0 + 1, ""))? {
        let (k, v) = item?;
        out.push((
            stored_track_key(k.value().1)?,
            TrackRecord::decode(v.value())?,
        ));
    }
    Ok(out)
}

fn each_track(
    t: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
) -> Result<()> {
    for item in t.iter()? {
        let (k, v) = item?;
        let (no, key) = k.value();
        f(UserNo(no), key, TrackRecord::decode(v.value())?)?;
    }
    Ok(())
}

fn get_chunk(
    t: &impl ReadableTable<(u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]>,
    domain: Domain,
    id: &ChunkId,
) -> Result<Option<ChunkEntry>> {
    match t.get((domain.to_u64(), id.0))? {
        Some(v) => Ok(Some(ChunkEntry::decode(&v.value())?)),
        None => Ok(None),
    }
}

fn each_chunk(
    t: &impl ReadableTable<(u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]>,
    f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
) -> Result<()> {
    for item in t.iter()? {
        let (k, v) = item?;
        let (d, id) = decode_chunk_key(k.value())?;
        f(d, id, ChunkEntry::decode(&v.value())?)?;
    }
    Ok(())
}

fn holders(
    t: &impl ReadableTable<([u8; 32], u64, &'static str), ()>,
    fp: &AudioFingerprint,
    limit: usize,
) -> Result<Vec<(UserNo, TrackKey)>> {
    let mut out = Vec::new();
    for item in t.range((fp.0, 0u64, "")..)? {
        let (k, _) = item?;
        let (f, no, key) = k.value();
        if f != fp.0 || out.len() >= limit {
            break;
        }
        out.push((UserNo(no), stored_track_key(key)?));
    }
    Ok(out)
}

fn get_pack(
    t: &impl ReadableTable<u64, [u8; PACK_ROW_LEN]>,
    id: PackId,
) -> Result<Option<PackRow>> {
    match t.get(id.0)? {
        Some(v) => Ok(Some(PackRow::decode(&v.value())?)),
        None => Ok(None),
    }
}

fn get_quota(
    t: &impl ReadableTable<u64, [u8; QUOTA_ROW_LEN]>,
    user: UserNo,
) -> Result<Option<QuotaRow>> {
    Ok(t.get(user.0)?.map(|v| QuotaRow::decode(&v.value())))
}

fn all_packs(t: &impl ReadableTable<u64, [u8; PACK_ROW_LEN]>) -> Result<Vec<(PackId, PackRow)>> {
    let mut out = Vec::new();
    for item in t.iter()? {
        let (k, v) = item?;
        out.push((PackId(k.value()), PackRow::decode(&v.value())?));
    }
    Ok(out)
}

struct RedbRead {
    txn: ReadTransaction,
    // The two tables hot reads touch are opened once per snapshot.
    chunks: OnceCell<ChunkTable>,
    tracks: OnceCell<ReadOnlyTable<(u64, &'static str), &'static [u8]>>,
}

impl RedbRead {
    fn chunks(&self) -> Result<&ChunkTable> {
        if self.chunks.get().is_none() {
            let t = self.txn.open_table(CHUNKS)?;
            let _ = self.chunks.set(t);
        }
        Ok(self.chunks.get().expect("just set"))
    }

    fn tracks(&self) -> Result<&ReadOnlyTable<(u64, &'static str), &'static [u8]>> {
        if self.tracks.get().is_none() {
            let t = self.txn.open_table(TRACKS)?;
            let _ = self.tracks.set(t);
        }
        Ok(self.tracks.get().expect("just set"))
    }
}

impl MetaRead for RedbRead {
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        guarded("reading state", || {
            get_state(&self.txn.open_table(STATE)?, key)
        })
    }
    fn counter(&self, key: &str) -> Result<u64> {
        guarded("reading counter", || {
            get_counter(&self.txn.open_table(COUNTERS)?, key)
        })
    }
    fn user(&self, id: &UserId) -> Result<Option<UserRow>> {
        guarded("reading user", || {
            get_user(&self.txn.open_table(USERS)?, id)
        })
    }
    fn user_name(&self, no: UserNo) -> Result<Option<UserId>> {
        guarded("reading user_name", || {
            get_user_name(&self.txn.open_table(USER_NAMES)?, no)
        })
    }
    fn users_raw(&self) -> Result<Vec<(String, UserRow)>> {
        guarded("reading users", || all_users(&self.txn.open_table(USERS)?))
    }
    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>> {
        guarded("reading track", || get_track(self.tracks()?, user, key))
    }
    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>> {
        guarded("reading tracks_of", || tracks_of(self.tracks()?, user))
    }
    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        guarded("reading for_each_track_raw", || {
            each_track(self.tracks()?, f)
        })
    }
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        guarded("reading chunk", || get_chunk(self.chunks()?, domain, id))
    }
    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        guarded("reading for_each_chunk", || each_chunk(self.chunks()?, f))
    }
    fn pack(&self, id: PackId) -> Result<Option<PackRow>> {
        guarded("reading pack", || {
            get_pack(&self.txn.open_table(PACKS)?, id)
        })
    }
    fn packs(&self) -> Result<Vec<(PackId, PackRow)>> {
        guarded("reading packs", || all_packs(&self.txn.open_table(PACKS)?))
    }
    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>> {
        guarded("reading quota", || {
            get_quota(&self.txn.open_table(QUOTAS)?, user)
        })
    }
    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool> {
        guarded("reading quota_exempt", || {
            Ok(self
                .txn
                .open_table(QUOTA_EXEMPT)?
                .get((user.0, key.as_str()))?
                .is_some())
        })
    }
    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>> {
        guarded("reading recordings", || {
            holders(&self.txn.open_table(RECORDINGS)?, fp, limit)
        })
    }
    #[cfg(feature = "object-store")]
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        guarded("dumping", || {
            let t = &self.txn;
            Tables {
                state: &t.open_table(STATE)?,
                counters: &t.open_table(COUNTERS)?,
                users: &t.open_table(USERS)?,
                user_names: &t.open_table(USER_NAMES)?,
                tracks: self.tracks()?,
                chunks: self.chunks()?,
                packs: &t.open_table(PACKS)?,
                recordings: &t.open_table(RECORDINGS)?,
                quotas: &t.open_table(QUOTAS)?,
                quota_exempt: &t.open_table(QUOTA_EXEMPT)?,
            }
            .dump(f)
        })
    }
}

struct RedbWrite<'t> {
    state: Table<'t, &'static str, &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
    users: Table<'t, &'static str, [u8; USER_ROW_LEN]>,
    user_names: Table<'t, u64, &'static str>,
    tracks: Table<'t, (u64, &'static str), &'static [u8]>,
    chunks: Table<'t, (u64, [u8; 32]), [u8; CHUNK_ENTRY_LEN]>,
    packs: Table<'t, u64, [u8; PACK_ROW_LEN]>,
    recordings: Table<'t, ([u8; 32], u64, &'static str), ()>,
    quotas: Table<'t, u64, [u8; QUOTA_ROW_LEN]>,
    quota_exempt: Table<'t, (u64, &'static str), ()>,
    filter: Option<&'t ChunkFilter>,
}

impl<'t> RedbWrite<'t> {
    fn new(txn: &'t WriteTransaction, filter: Option<&'t ChunkFilter>) -> Result<RedbWrite<'t>> {
        Ok(RedbWrite {
            state: txn.open_table(STATE)?,
            counters: txn.open_table(COUNTERS)?,
            users: txn.open_table(USERS)?,
            user_names: txn.open_table(USER_NAMES)?,
            tracks: txn.open_table(TRACKS)?,
            chunks: txn.open_table(CHUNKS)?,
            packs: txn.open_table(PACKS)?,
            recordings: txn.open_table(RECORDINGS)?,
            quotas: txn.open_table(QUOTAS)?,
            quota_exempt: txn.open_table(QUOTA_EXEMPT)?,
            filter,
        })
    }
}

impl MetaRead for RedbWrite<'_> {
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        get_state(&self.state, key)
    }
    fn counter(&self, key: &str) -> Result<u64> {
        get_counter(&self.counters, key)
    }
    fn user(&self, id: &UserId) -> Result<Option<UserRow>> {
        get_user(&self.users, id)
    }
    fn user_name(&self, no: UserNo) -> Result<Option<UserId>> {
        get_user_name(&self.user_names, no)
    }
    fn users_raw(&self) -> Result<Vec<(String, UserRow)>> {
        all_users(&self.users)
    }
    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>> {
        get_track(&self.tracks, user, key)
    }
    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>> {
        tracks_of(&self.tracks, user)
    }
    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        each_track(&self.tracks, f)
    }
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        get_chunk(&self.chunks, domain, id)
    }
    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        each_chunk(&self.chunks, f)
    }
    fn pack(&self, id: PackId) -> Result<Option<PackRow>> {
        get_pack(&self.packs, id)
    }
    fn packs(&self) -> Result<Vec<(PackId, PackRow)>> {
        all_packs(&self.packs)
    }
    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>> {
        get_quota(&self.quotas, user)
    }
    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool> {
        Ok(self.quota_exempt.get((user.0, key.as_str()))?.is_some())
    }
    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>> {
        holders(&self.recordings, fp, limit)
    }
    #[cfg(feature = "object-store")]
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        Tables {
            state: &self.state,
            counters: &self.counters,
            users: &self.users,
            user_names: &self.user_names,
            tracks: &self.tracks,
            chunks: &self.chunks,
            packs: &self.packs,
            recordings: &self.recordings,
            quotas: &self.quotas,
            quota_exempt: &self.quota_exempt,
        }
        .dump(f)
    }
}

impl MetaWrite for RedbWrite<'_> {
    fn set_state(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.state.insert(key, value)?;
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<()> {
        self.counters.insert(key, value)?;
        Ok(())
    }
    fn put_user(&mut self, id: &UserId, row: &UserRow) -> Result<()> {
        self.users.insert(id.as_str(), row.encode())?;
        Ok(())
    }
    fn put_user_name(&mut self, no: UserNo, id: &UserId) -> Result<()> {
        self.user_names.insert(no.0, id.as_str())?;
        Ok(())
    }
    fn put_track(&mut self, user: UserNo, key: &TrackKey, track: &TrackRecord) -> Result<()> {
        self.tracks
            .insert((user.0, key.as_str()), track.encode().as_slice())?;
        Ok(())
    }
    fn remove_track(&mut self, user: UserNo, key: &TrackKey) -> Result<()> {
        self.tracks.remove((user.0, key.as_str()))?;
        Ok(())
    }
    fn put_chunk(&mut self, domain: Domain, id: &ChunkId, entry: &ChunkEntry) -> Result<()> {
        if let Some(f) = self.filter {
            f.insert(domain, id);
        }
        self.chunks
            .insert((domain.to_u64(), id.0), entry.encode())?;
        Ok(())
    }
    fn remove_chunk(&mut self, domain: Domain, id: &ChunkId) -> Result<()> {
        self.chunks.remove((domain.to_u64(), id.0))?;
        Ok(())
    }
    fn put_pack(&mut self, id: PackId, row: &PackRow) -> Result<()> {
        self.packs.insert(id.0, row.encode())?;
        Ok(())
    }
    fn remove_pack(&mut self, id: PackId) -> Result<()> {
        self.packs.remove(id.0)?;
        Ok(())
    }
    fn put_quota(&mut self, user: UserNo, row: &QuotaRow) -> Result<()> {
        self.quotas.insert(user.0, row.encode())?;
        Ok(())
    }
    fn set_quota_exempt(&mut self, user: UserNo, key: &TrackKey, exempt: bool) -> Result<()> {
        if exempt {
            self.quota_exempt.insert((user.0, key.as_str()), ())?;
        } else {
            self.quota_exempt.remove((user.0, key.as_str()))?;
        }
        Ok(())
    }
    fn put_recording(&mut self, fp: &AudioFingerprint, user: UserNo, key: &TrackKey) -> Result<()> {
        self.recordings.insert((fp.0, user.0, key.as_str()), ())?;
        Ok(())
    }
    fn remove_recording(
        &mut self,
        fp: &AudioFingerprint,
        user: UserNo,
        key: &TrackKey,
    ) -> Result<()> {
        self.recordings.remove((fp.0, user.0, key.as_str()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ChunkRef, Codec, TrackAudio};
    use crate::ids::Fingerprint;
    use crate::index::write_with;
    use crate::vfs::StdVfs;

    fn track(fp: [u8; 32]) -> TrackRecord {
        TrackRecord {
            domain: Domain::Shared,
            len: 10,
            fingerprint: Fingerprint::of(b"t"),
            stored_at: 0,
            holder: None,
            audio: Some(TrackAudio {
                format: 1,
                fingerprint: fp,
                ranges: vec![(0, 10)],
            }),
            chunks: vec![ChunkRef {
                id: ChunkId::of(b"c"),
                len: 10,
            }],
        }
    }

    fn entry(pack: u64) -> ChunkEntry {
        ChunkEntry {
            pack: PackId(pack),
            offset: 32,
            stored_len: 10,
            plain_len: 10,
            codec: Codec::Raw,
            refcount: 0,
        }
    }

    /// Typed reads call a stored name that fails validation `Corrupted`; the raw scans return
    /// it as stored.
    #[test]
    fn bad_stored_names_are_corruption_and_raw_scans_list_them() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = RedbMeta::open(&StdVfs, &tmp.path().join("m.redb"), true).unwrap();
        let (alice, a) = (UserId::new("alice").unwrap(), TrackKey::new("a").unwrap());
        let fp = AudioFingerprint([9; 32]);
        let t = track(fp.0);
        write_with(&meta, |w| {
            w.put_user(&alice, &UserRow::decode(&[0; USER_ROW_LEN]))?;
            w.put_user_name(UserNo(1), &alice)?;
            w.put_track(UserNo(1), &a, &t)?;
            w.put_recording(&fp, UserNo(1), &a)
        })
        .unwrap();
        let snap = meta.read().unwrap();
        assert_eq!(snap.users_raw().unwrap()[0].0, alice.as_str());
        assert_eq!(snap.user_name(UserNo(1)).unwrap(), Some(alice.clone()));
        assert_eq!(
            snap.tracks_of(UserNo(1)).unwrap(),
            vec![(a.clone(), t.clone())]
        );
        assert_eq!(
            snap.recording_holders(&fp, 5).unwrap(),
            vec![(UserNo(1), a.clone())]
        );
        drop(snap);

        // Names no put could have written, as damage would leave them.
        let txn = meta.db.begin_write().unwrap();
        {
            let row = UserRow::decode(&[0; USER_ROW_LEN]).encode();
            txn.open_table(USERS).unwrap().insert("b\0d", row).unwrap();
            txn.open_table(USER_NAMES)
                .unwrap()
                .insert(2, "b\0d")
                .unwrap();
            let rec = t.encode();
            txn.open_table(TRACKS)
                .unwrap()
                .insert((1, "x\ny"), rec.as_slice())
                .unwrap();
            txn.open_table(RECORDINGS)
                .unwrap()
                .insert((fp.0, 1, "x\ny"), ())
                .unwrap();
        }
        txn.commit().unwrap();

        let snap = meta.read().unwrap();
        let invalid = |e: Error| e.is_corruption() && e.to_string().contains("is invalid");
        assert!(invalid(snap.user_name(UserNo(2)).unwrap_err()));
        assert!(invalid(snap.tracks_of(UserNo(1)).unwrap_err()));
        assert!(invalid(
            snap.for_each_track(&mut |_, _, _| Ok(())).unwrap_err()
        ));
        assert!(invalid(snap.recording_holders(&fp, 5).unwrap_err()));
        // Only the holders returned are read back: "a" sorts before "x\ny".
        assert_eq!(snap.recording_holders(&fp, 1).unwrap().len(), 1);
        let names: Vec<String> = snap.users_raw().unwrap().into_iter().map(|u| u.0).collect();
        assert_eq!(names, ["alice", "b\0d"]);
        let mut keys = Vec::new();
        snap.for_each_track_raw(&mut |_, k, _| {
            keys.push(k.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, ["a", "x\ny"]);
    }

    #[test]
    fn insert_chunk_if_absent_keeps_the_first_and_chunks_answers_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = RedbMeta::open(&StdVfs, &tmp.path().join("m.redb"), true).unwrap();
        let (x, y) = (ChunkId::of(b"x"), ChunkId::of(b"y"));
        let got = write_with(&meta, |w| {
            let first = w.insert_chunk_if_absent(Domain::Shared, &x, &entry(1))?;
            let second = w.insert_chunk_if_absent(Domain::Shared, &x, &entry(2))?;
            Ok((first, second))
        })
        .unwrap();
        assert_eq!(got, (None, Some(entry(1))));
        let snap = meta.read().unwrap();
        assert_eq!(
            snap.chunks(&[
                (Domain::Shared, y),
                (Domain::Shared, x),
                (Domain::User(UserNo(1)), x)
            ])
            .unwrap(),
            vec![None, Some(entry(1)), None]
        );
    }
}
