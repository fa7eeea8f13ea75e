//! `FaultFs`: an in-memory [`Vfs`] that models what survives a power loss, and injects crashes,
//! I/O errors and bit flips.
//!
//! # Durability model
//!
//! - **Files are inodes** with two byte vectors: *current* (what reads see; changed by
//!   `write_all_at` and `set_len`) and *durable* (what survives a power loss). `sync_data` copies
//!   the file's current bytes, length included, to its durable bytes. An open handle names the
//!   inode, so it keeps working after its name was renamed or removed (as on POSIX).
//! - **Names are per directory.** The *current namespace* maps paths to inodes or directories and
//!   is changed at once by `create_new`, `open_rw` (when it creates), `try_lock` (when it
//!   creates), `create_dir_all`, `rename` and `remove_file`. Each directory also has a *durable
//!   namespace*: `sync_dir(d)` replaces the durable entries whose parent is `d` by the current
//!   ones. So a file created but whose directory was not synced is gone after a power loss, an
//!   unsynced rename is undone and an unsynced removal comes back. The root `/` always exists.
//! - **Crash** (`crash_after_syncs`, `crash_after_writes`): the chosen sync (`sync_data` or
//!   `sync_dir`, counted together) or write does *not* happen; it and every later operation fail
//!   with EIO (`exists` answers false), so the engine can make no more progress. Maps handed out
//!   before keep their bytes. `crash_after_syncs_landed` crashes right after the chosen sync took
//!   effect (the call itself returns EIO): a commit that is durable although the caller saw an
//!   error.
//! - **Crash image** ([`FaultFs::crash_image`]): the state after a power loss at that moment. The
//!   durable namespace (an entry survives only if every ancestor directory's entry survives too),
//!   each surviving file with its durable bytes. **Torn write:** a crash at a write may let a
//!   prefix of that one write (`tear` bytes, clamped to its length) reach the disk: the image of
//!   that file is its durable bytes with the prefix laid over them at the write's offset
//!   (zero-filled if the offset is past the durable length). Every other unsynced write is lost.
//!   This is one of the outcomes a real disk allows (it may keep any subset of unsynced writes);
//!   it is the harshest simple one: later writes survive while earlier ones do not.
//! - [`FaultFs::image_now`] is the current state after a clean shutdown: every current name and
//!   byte, all durable. [`FaultFs::after_kill`] is what a process restarted after a kill finds:
//!   the current state, with what was not durable still not durable.
//! - [`FaultFs::from_image`] builds a fresh file system whose current and durable state are the
//!   image, with counters at zero and nothing armed.
//!
//! # Error injection
//!
//! [`FaultFs::fail_after`] fails the k-th next operation of a kind, once, with EIO or ENOSPC
//! (`from_raw_os_error(28)`); [`FaultFs::fail_after_on`] counts only operations on paths that
//! contain a pattern. A failing operation does nothing (no partial write; a failed `sync_data`
//! leaves the file's bytes current but not durable, and a later successful one makes them
//! durable: the optimistic reading of fsync errors, not Linux's "the dirty pages may be gone").
//! Later operations succeed.
//! Bit flips ([`Flip`]) flip one bit of the bytes `read_exact_at` and `map` return for files
//! whose name contains a pattern, at a file offset or in the middle of each returned buffer.
//!
//! Every operation is counted by kind ([`Op`]), so a test can run a scenario once to count its
//! crash and fault points, then rerun it with a fault at each. With `FAULTFS_TRACE` set in the
//! environment, every sync is printed to stderr with its number.
//!
//! The [`harness`] module holds the scenarios and checks the crash-point and error-injection
//! tests share.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lockerstore::vfs::{Mapped, Vfs, VfsFile};

/// Kinds of operations, for counters and fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `VfsFile::write_all_at`.
    Write,
    /// `VfsFile::sync_data`.
    SyncData,
    /// `Vfs::sync_dir`.
    SyncDir,
    /// `VfsFile::set_len`.
    SetLen,
    /// `Vfs::create_new`, and `Vfs::open_rw` with `create` set.
    Create,
    /// `Vfs::open_rw` without `create`.
    Open,
    /// `Vfs::rename`.
    Rename,
    /// `Vfs::remove_file`.
    Remove,
    /// `VfsFile::read_exact_at`.
    Read,
    /// `Vfs::read` (a whole file).
    ReadFile,
    /// `Vfs::map`.
    Map,
    /// `Vfs::list_dir`.
    List,
    /// `Vfs::create_dir_all`.
    CreateDir,
    /// `Vfs::try_lock`.
    Lock,
    /// `VfsFile::len`.
    Len,
}

impl Op {
    /// Every kind.
    pub const ALL: [Op; 15] = [
        Op::Write,
        Op::SyncData,
        Op::SyncDir,
        Op::SetLen,
        Op::Create,
        Op::Open,
        Op::Rename,
        Op::Remove,
        Op::Read,
        Op::ReadFile,
        Op::Map,
        Op::List,
        Op::CreateDir,
        Op::Lock,
        Op::Len,
    ];
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// EIO (5).
    Eio,
    /// ENOSPC (28).
    Enospc,
}

impl Failure {
    fn error(self) -> io::Error {
        match self {
            Failure::Eio => io::Error::from_raw_os_error(5),
            Failure::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// Where a bit flip lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlipAt {
    /// At this offset of the file, whenever returned bytes cover it.
    Offset(u64),
    /// In the middle byte of every buffer returned.
    Middle,
}

/// Flips bit `bit` of returned bytes of files whose name contains `name_contains`.
#[derive(Clone, Debug)]
pub struct Flip {
    /// Pattern the file name (last path component) must contain.
    pub name_contains: String,
    /// Where.
    pub at: FlipAt,
    /// Which bit (0..8).
    pub bit: u8,
}

/// Operation counts by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(BTreeMap<Op, u64>);

impl Counts {
    /// Operations of one kind.
    pub fn get(&self, op: Op) -> u64 {
        self.0.get(&op).copied().unwrap_or(0)
    }
    /// Syncs: `sync_data` and `sync_dir` together (the crash points).
    pub fn syncs(&self) -> u64 {
        self.get(Op::SyncData) + self.get(Op::SyncDir)
    }
    /// Counts since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            Op::ALL
                .iter()
                .map(|op| (*op, self.get(*op) - earlier.get(*op)))
                .collect(),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

/// A file system state: names and file bytes. Built by [`FaultFs::crash_image`] and
/// [`FaultFs::image_now`]; [`FaultFs::from_image`] boots from it.
#[derive(Clone)]
pub struct Image {
    names: BTreeMap<PathBuf, Node>,
    files: HashMap<u64, Vec<u8>>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (p, n) in &self.names {
            match n {
                Node::Dir => m.entry(p, &"dir"),
                Node::File(ino) => m.entry(p, &self.files[ino].len()),
            };
        }
        m.finish()
    }
}

impl Image {
    /// The bytes of a file in the image.
    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        match self.names.get(path)? {
            Node::File(ino) => Some(&self.files[ino]),
            Node::Dir => None,
        }
    }
    /// Names of the directory's entries.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        self.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }
}

struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

struct Fault {
    op: Op,
    /// Only operations on paths containing this count, if set.
    path_contains: Option<String>,
    /// Matching operations still to go before the one that fails (1 = the next one).
    remaining: u64,
    failure: Failure,
    fired: bool,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    counts: BTreeMap<Op, u64>,
    syncs: u64,
    writes: u64,
    crash_at_sync: Option<(u64, bool)>,
    /// Set by a crash at a sync that takes effect first: the crash happens after the sync.
    landing: Option<String>,
    crash_at_write: Option<(u64, usize)>,
    crashed: Option<String>,
    torn: Option<(u64, u64, Vec<u8>)>,
    faults: Vec<Fault>,
    injected: Vec<String>,
    flips: Vec<Flip>,
    locks: HashSet<PathBuf>,
    available: u64,
}

impl State {
    fn from_image(image: &Image) -> State {
        let inodes = image
            .files
            .iter()
            .map(|(ino, bytes)| {
                (
                    *ino,
                    Inode {
                        data: bytes.clone(),
                        durable: bytes.clone(),
                    },
                )
            })
            .collect();
        let mut names = image.names.clone();
        names.insert(PathBuf::from("/"), Node::Dir);
        State {
            inodes,
            next_ino: image.files.keys().max().map_or(1, |m| m + 1),
            durable_names: names.clone(),
            names,
            counts: BTreeMap::new(),
            syncs: 0,
            writes: 0,
            crash_at_sync: None,
            landing: None,
            crash_at_write: None,
            crashed: None,
            torn: None,
            faults: Vec::new(),
            injected: Vec::new(),
            flips: Vec::new(),
            locks: HashSet::new(),
            available: 1 << 40,
        }
    }

    /// Counts an operation and decides whether it fails: crashed, crashing now, or injected.
    /// `write` describes a write (inode, offset, bytes) so a crash can tear it.
    fn enter(&mut self, op: Op, path: &Path, write: Option<(u64, u64, &[u8])>) -> io::Result<()> {
        if self.crashed.is_some() {
            return Err(eio());
        }
        let n = {
            let c = self.counts.entry(op).or_default();
            *c += 1;
            *c
        };
        if matches!(op, Op::SyncData | Op::SyncDir) {
            self.syncs += 1;
            if std::env::var_os("FAULTFS_TRACE").is_some() {
                eprintln!("faultfs: sync #{} {op:?} {}", self.syncs, path.display());
            }
            if let Some((at, lands)) = self.crash_at_sync
                && at == self.syncs
            {
                let what = format!(
                    "crash at sync #{} ({op:?} {}){}",
                    self.syncs,
                    path.display(),
                    if lands { " after it took effect" } else { "" }
                );
                if lands {
                    self.landing = Some(what);
                    return Ok(());
                }
                self.crashed = Some(what);
                return Err(eio());
            }
        }
        if let Some((ino, offset, data)) = write {
            self.writes += 1;
            if let Some((at, tear)) = self.crash_at_write
                && at == self.writes
            {
                let keep = tear.min(data.len());
                self.torn = Some((ino, offset, data[..keep].to_vec()));
                self.crashed = Some(format!(
                    "crash at write #{} ({} bytes at {offset} of {}, {keep} land)",
                    self.writes,
                    data.len(),
                    path.display()
                ));
                return Err(eio());
            }
        }
        let p = path.to_string_lossy();
        for f in &mut self.faults {
            if f.fired
                || f.op != op
                || f.path_contains
                    .as_ref()
                    .is_some_and(|c| !p.contains(c.as_str()))
            {
                continue;
            }
            f.remaining -= 1;
            if f.remaining == 0 {
                f.fired = true;
                self.injected.push(format!(
                    "{:?} on {op:?} #{n} ({})",
                    f.failure,
                    path.display()
                ));
                return Err(f.failure.error());
            }
        }
        Ok(())
    }

    /// After a sync took effect: crashes now if the crash was armed to follow it.
    fn land(&mut self) -> io::Result<()> {
        match self.landing.take() {
            Some(what) => {
                self.crashed = Some(what);
                Err(eio())
            }
            None => Ok(()),
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.crashed.is_some() {
            Err(eio())
        } else {
            Ok(())
        }
    }

    fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            None => Ok(()),
            Some(p) => match self.names.get(p) {
                Some(Node::Dir) => Ok(()),
                Some(Node::File(_)) => Err(io::Error::other("parent is not a directory")),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no directory {}", p.display()),
                )),
            },
        }
    }

    fn new_file(&mut self, path: &Path) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                data: Vec::new(),
                durable: Vec::new(),
            },
        );
        self.names.insert(path.to_owned(), Node::File(ino));
        ino
    }

    fn flip(&self, name: &str, offset: u64, buf: &mut [u8]) {
        for f in &self.flips {
            if !name.contains(&f.name_contains) || buf.is_empty() {
                continue;
            }
            let at = match f.at {
                FlipAt::Middle => Some(buf.len() / 2),
                FlipAt::Offset(o) => {
                    (o >= offset && o < offset + buf.len() as u64).then(|| (o - offset) as usize)
                }
            };
            if let Some(i) = at {
                buf[i] ^= 1 << (f.bit % 8);
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fault-injecting file system. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("FaultFs")
            .field("files", &s.names.len())
            .field("syncs", &s.syncs)
            .field("writes", &s.writes)
            .field("crashed", &s.crashed)
            .finish()
    }
}

impl Default for FaultFs {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultFs {
    /// An empty file system (just `/`).
    pub fn new() -> FaultFs {
        FaultFs::from_image(&Image {
            names: BTreeMap::new(),
            files: HashMap::new(),
        })
    }

    /// A fresh file system whose current and durable state is `image`.
    pub fn from_image(image: &Image) -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(State::from_image(image))),
        }
    }

    /// This file system as a `Vfs` for `Options`.
    pub fn vfs(&self) -> Arc<dyn Vfs> {
        Arc::new(self.clone())
    }

    /// The state after a power loss now (see the module docs).
    pub fn crash_image(&self) -> Image {
        let s = lock(&self.state);
        let mut names: BTreeMap<PathBuf, Node> = BTreeMap::new();
        // Sorted by components, a directory comes before its entries.
        for (p, n) in &s.durable_names {
            let reachable = match p.parent() {
                None => true,
                Some(parent) => names.get(parent) == Some(&Node::Dir),
            };
            if reachable {
                names.insert(p.clone(), *n);
            }
        }
        let mut files = HashMap::new();
        for n in names.values() {
            if let Node::File(ino) = n {
                let mut bytes = s.inodes[ino].durable.clone();
                if let Some((t, offset, prefix)) = &s.torn
                    && t == ino
                    && !prefix.is_empty()
                {
                    let off = *offset as usize;
                    if bytes.len() < off + prefix.len() {
                        bytes.resize(off + prefix.len(), 0);
                    }
                    bytes[off..off + prefix.len()].copy_from_slice(prefix);
                }
                files.insert(*ino, bytes);
            }
        }
        Image { names, files }
    }

    /// The file system a process restarted after a kill (without power loss) finds: current
    /// and durable state as they are here (what was not synced is still not durable), with the
    /// crash, armed faults, flips, locks and counters cleared.
    pub fn after_kill(&self) -> FaultFs {
        let s = lock(&self.state);
        let inodes = s
            .inodes
            .iter()
            .map(|(ino, i)| {
                (
                    *ino,
                    Inode {
                        data: i.data.clone(),
                        durable: i.durable.clone(),
                    },
                )
            })
            .collect();
        let mut fresh = State::from_image(&Image {
            names: BTreeMap::new(),
            files: HashMap::new(),
        });
        fresh.inodes = inodes;
        fresh.next_ino = s.next_ino;
        fresh.names = s.names.clone();
        fresh.durable_names = s.durable_names.clone();
        fresh.available = s.available;
        FaultFs {
            state: Arc::new(Mutex::new(fresh)),
        }
    }

    /// The current state, every name and byte made durable: what a clean shutdown (with the
    /// OS flushing everything) leaves.
    pub fn image_now(&self) -> Image {
        let s = lock(&self.state);
        let files = s
            .names
            .values()
            .filter_map(|n| match n {
                Node::File(ino) => Some((*ino, s.inodes[ino].data.clone())),
                Node::Dir => None,
            })
            .collect();
        Image {
            names: s.names.clone(),
            files,
        }
    }

    /// Counters by kind so far.
    pub fn counts(&self) -> Counts {
        Counts(lock(&self.state).counts.clone())
    }

    /// Crash at the `k`-th sync from now (1 = the next one): that sync does not happen.
    pub fn crash_after_syncs(&self, k: u64) {
        assert!(k > 0);
        let mut s = lock(&self.state);
        s.crash_at_sync = Some((s.syncs + k, false));
    }

    /// Crash right after the `k`-th sync from now took effect, before it returns (it returns
    /// EIO, like every later operation).
    pub fn crash_after_syncs_landed(&self, k: u64) {
        assert!(k > 0);
        let mut s = lock(&self.state);
        s.crash_at_sync = Some((s.syncs + k, true));
    }

    /// Crash at the `k`-th write from now; `tear` bytes of that write reach the disk.
    pub fn crash_after_writes(&self, k: u64, tear: usize) {
        assert!(k > 0);
        let mut s = lock(&self.state);
        s.crash_at_write = Some((s.writes + k, tear));
    }

    /// What crashed, if the crash happened.
    pub fn crashed(&self) -> Option<String> {
        lock(&self.state).crashed.clone()
    }

    /// Fails the `k`-th next operation of kind `op` (1 = the next one), once.
    pub fn fail_after(&self, op: Op, k: u64, failure: Failure) {
        self.fail_after_on(op, k, failure, "");
    }

    /// Fails the `k`-th next operation of kind `op` on a path containing `path_contains`, once.
    pub fn fail_after_on(&self, op: Op, k: u64, failure: Failure, path_contains: &str) {
        assert!(k > 0);
        lock(&self.state).faults.push(Fault {
            op,
            path_contains: (!path_contains.is_empty()).then(|| path_contains.to_owned()),
            remaining: k,
            failure,
            fired: false,
        });
    }

    /// Faults that fired so far, described.
    pub fn injected(&self) -> Vec<String> {
        lock(&self.state).injected.clone()
    }

    /// Removes every armed fault that has not fired.
    pub fn disarm(&self) {
        lock(&self.state).faults.retain(|f| f.fired);
    }

    /// Adds a bit flip.
    pub fn add_flip(&self, flip: Flip) {
        lock(&self.state).flips.push(flip);
    }

    /// Removes every bit flip.
    pub fn clear_flips(&self) {
        lock(&self.state).flips.clear();
    }

    /// What `available_space` answers.
    pub fn set_available_space(&self, bytes: u64) {
        lock(&self.state).available = bytes;
    }

    /// Current bytes of a file (no counting, no faults).
    pub fn peek(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        match s.names.get(path)? {
            Node::File(ino) => Some(s.inodes[ino].data.clone()),
            Node::Dir => None,
        }
    }

    /// Current names in a directory (no counting, no faults).
    pub fn peek_dir(&self, dir: &Path) -> Vec<String> {
        let s = lock(&self.state);
        s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn handle(&self, ino: u64, path: &Path) -> Arc<dyn VfsFile> {
        Arc::new(FaultFile {
            state: self.state.clone(),
            ino,
            path: path.to_owned(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }
}

/// An open file of a [`FaultFs`].
pub struct FaultFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    path: PathBuf,
    name: String,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultFile({})", self.path.display())
    }
}

impl VfsFile for FaultFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::Read, &self.path, None)?;
        let data = &s.inodes[&self.ino].data;
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(&data[offset as usize..end as usize]);
        s.flip(&self.name, offset, buf);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::Write, &self.path, Some((self.ino, offset, buf)))?;
        let data = &mut s.inodes.get_mut(&self.ino).expect("inode").data;
        let end = offset as usize + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::SyncData, &self.path, None)?;
        let inode = s.inodes.get_mut(&self.ino).expect("inode");
        inode.durable.clone_from(&inode.data);
        s.land()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::SetLen, &self.path, None)?;
        s.inodes
            .get_mut(&self.ino)
            .expect("inode")
            .data
            .resize(len as usize, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = lock(&self.state);
        s.enter(Op::Len, &self.path, None)?;
        Ok(s.inodes[&self.ino].data.len() as u64)
    }
}

/// A "map": a copy of the file's bytes when it was made.
struct MemMap(Vec<u8>);

impl fmt::Debug for MemMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemMap({} bytes)", self.0.len())
    }
}

impl Mapped for MemMap {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An in-memory advisory lock, released on drop.
struct LockGuard {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockGuard({})", self.path.display())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.path);
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Vfs for FaultFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::CreateDir, path, None)?;
        let mut chain: Vec<&Path> = path.ancestors().collect();
        chain.reverse();
        for p in chain {
            match s.names.get(p) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(io::Error::other("a file is in the way")),
                None => {
                    s.names.insert(p.to_owned(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let ino = {
            let mut s = lock(&self.state);
            s.enter(Op::Create, path, None)?;
            s.parent_is_dir(path)?;
            if s.names.contains_key(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            s.new_file(path)
        };
        Ok(self.handle(ino, path))
    }

    fn open_rw(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let ino = {
            let mut s = lock(&self.state);
            s.enter(if create { Op::Create } else { Op::Open }, path, None)?;
            match s.names.get(path) {
                Some(Node::File(ino)) => *ino,
                Some(Node::Dir) => return Err(io::Error::other("is a directory")),
                None if create => {
                    s.parent_is_dir(path)?;
                    s.new_file(path)
                }
                None => return Err(not_found(path)),
            }
        };
        Ok(self.handle(ino, path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut s = lock(&self.state);
        s.enter(Op::ReadFile, path, None)?;
        match s.names.get(path) {
            Some(Node::File(ino)) => Ok(s.inodes[ino].data.clone()),
            Some(Node::Dir) => Err(io::Error::other("is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::Rename, from, None)?;
        let node = match s.names.get(from) {
            Some(n @ Node::File(_)) => *n,
            Some(Node::Dir) => return Err(io::Error::other("renaming directories: unsupported")),
            None => return Err(not_found(from)),
        };
        s.parent_is_dir(to)?;
        if s.names.get(to) == Some(&Node::Dir) {
            return Err(io::Error::other("target is a directory"));
        }
        s.names.remove(from);
        s.names.insert(to.to_owned(), node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::Remove, path, None)?;
        match s.names.get(path) {
            Some(Node::File(_)) => {
                s.names.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::other("is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.enter(Op::SyncDir, path, None)?;
        if s.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        s.durable_names.retain(|p, _| p.parent() != Some(path));
        let entries: Vec<(PathBuf, Node)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        s.durable_names.extend(entries);
        s.land()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut s = lock(&self.state);
        s.enter(Op::List, path, None)?;
        if s.names.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        let mut names: Vec<String> = s
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let s = lock(&self.state);
        s.crashed.is_none() && s.names.contains_key(path)
    }

    /// Holds a copy of the bytes, so nothing the caller does can make it unsound; `unsafe` only
    /// because the trait's real implementation is.
    unsafe fn map(&self, path: &Path, len: u64) -> io::Result<Arc<dyn Mapped>> {
        let mut s = lock(&self.state);
        s.enter(Op::Map, path, None)?;
        let ino = match s.names.get(path) {
            Some(Node::File(ino)) => *ino,
            Some(Node::Dir) => return Err(io::Error::other("is a directory")),
            None => return Err(not_found(path)),
        };
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty range",
            ));
        }
        let data = &s.inodes[&ino].data;
        if (data.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than the range to map",
            ));
        }
        let mut bytes = data[..len as usize].to_vec();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        s.flip(&name, 0, &mut bytes);
        Ok(Arc::new(MemMap(bytes)))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Send + Sync + fmt::Debug>>> {
        let mut s = lock(&self.state);
        s.enter(Op::Lock, path, None)?;
        match s.names.get(path) {
            Some(Node::File(_)) | Some(Node::Dir) => {}
            None => {
                s.parent_is_dir(path)?;
                s.new_file(path);
            }
        }
        if !s.locks.insert(path.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(LockGuard {
            state: self.state.clone(),
            path: path.to_owned(),
        })))
    }

    fn available_space(&self, _path: &Path) -> io::Result<u64> {
        let s = lock(&self.state);
        s.check()?;
        Ok(s.available)
    }
}

/// Self-tests of the durability model.
pub mod selftest {
    use super::*;

    /// Runs the model's own checks; panics on a failure.
    pub fn run() {
        let fs = FaultFs::new();
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        // A file whose directory was not synced disappears; synced bytes of a synced name stay.
        let a = fs.create_new(&d.join("a")).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        assert_eq!(fs.crash_image().file(&d.join("a")), None);
        fs.sync_dir(d).unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let img = fs.crash_image();
        assert_eq!(img.file(&d.join("a")), Some(&b"hello"[..]));
        assert_eq!(fs.image_now().file(&d.join("a")), Some(&b"hello world"[..]));
        // An unsynced rename is undone; a synced one stays.
        fs.rename(&d.join("a"), &d.join("b")).unwrap();
        let img = fs.crash_image();
        assert!(img.file(&d.join("a")).is_some() && img.file(&d.join("b")).is_none());
        fs.sync_dir(d).unwrap();
        let img = fs.crash_image();
        assert!(img.file(&d.join("a")).is_none() && img.file(&d.join("b")).is_some());
        // An unsynced removal comes back.
        fs.remove_file(&d.join("b")).unwrap();
        assert!(fs.crash_image().file(&d.join("b")).is_some());
        assert!(!fs.exists(&d.join("b")));
        // Entries of an unsynced directory vanish with it.
        fs.create_dir_all(Path::new("/e/f")).unwrap();
        fs.create_new(Path::new("/e/f/g")).unwrap();
        fs.sync_dir(Path::new("/e/f")).unwrap();
        fs.sync_dir(Path::new("/e")).unwrap();
        assert_eq!(fs.crash_image().file(Path::new("/e/f/g")), None);
        fs.sync_dir(Path::new("/")).unwrap();
        assert_eq!(fs.crash_image().file(Path::new("/e/f/g")), Some(&b""[..]));
        // A crash at a write tears it; everything later fails.
        let c = fs.create_new(&d.join("c")).unwrap();
        fs.sync_dir(d).unwrap();
        c.write_all_at(b"0123", 0).unwrap();
        c.sync_data().unwrap();
        c.write_all_at(b"xx", 8).unwrap(); // lost: unsynced, not the torn one
        fs.crash_after_writes(1, 3);
        assert!(c.write_all_at(b"abcdef", 2).is_err());
        assert!(fs.crashed().is_some());
        assert!(c.sync_data().is_err() && fs.list_dir(d).is_err());
        assert_eq!(fs.crash_image().file(&d.join("c")), Some(&b"01abc"[..]));
        // A fresh file system boots from the image.
        let fs2 = FaultFs::from_image(&fs.crash_image());
        let c2 = fs2.open_rw(&d.join("c"), false).unwrap();
        let mut buf = [0u8; 5];
        c2.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"01abc");
        // A crash at a sync: that sync does not happen.
        c2.write_all_at(b"Z", 0).unwrap();
        fs2.crash_after_syncs(1);
        assert!(c2.sync_data().is_err());
        assert_eq!(fs2.crash_image().file(&d.join("c")), Some(&b"01abc"[..]));
        // A restart after a kill sees the current state; a later power loss still loses what
        // was never synced.
        let k = fs2.after_kill();
        let ck = k.open_rw(&d.join("c"), false).unwrap();
        let mut cur = [0u8; 5];
        ck.read_exact_at(&mut cur, 0).unwrap();
        assert_eq!(&cur, b"Z1abc");
        assert_eq!(k.crash_image().file(&d.join("c")), Some(&b"01abc"[..]));
        // A crash right after a sync: it took effect.
        let fs4 = FaultFs::from_image(&fs.crash_image());
        let c4 = fs4.open_rw(&d.join("c"), false).unwrap();
        c4.write_all_at(b"Z", 0).unwrap();
        fs4.crash_after_syncs_landed(1);
        assert!(c4.sync_data().is_err() && fs4.crashed().is_some());
        assert_eq!(fs4.crash_image().file(&d.join("c")), Some(&b"Z1abc"[..]));
        // Injected faults fire once, on the chosen operation.
        let fs3 = FaultFs::from_image(&fs.crash_image());
        fs3.fail_after(Op::SyncDir, 2, Failure::Enospc);
        fs3.sync_dir(d).unwrap();
        let e = fs3.sync_dir(d).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        fs3.sync_dir(d).unwrap();
        assert_eq!(fs3.counts().get(Op::SyncDir), 3);
        // Locks: a second lock on the same path fails until the first is dropped.
        let l = fs3.try_lock(&d.join("LOCK")).unwrap();
        assert!(l.is_some());
        assert!(fs3.try_lock(&d.join("LOCK")).unwrap().is_none());
        drop(l);
        assert!(fs3.try_lock(&d.join("LOCK")).unwrap().is_some());
        // Bit flips in reads and maps.
        fs3.add_flip(Flip {
            name_contains: "c".into(),
            at: FlipAt::Offset(1),
            bit: 0,
        });
        // SAFETY: the fault file system's maps are copies.
        let m = unsafe { fs3.map(&d.join("c"), 5) }.unwrap();
        assert_eq!(m.bytes(), b"00abc");
        let c3 = fs3.open_rw(&d.join("c"), false).unwrap();
        let mut one = [0u8; 2];
        c3.read_exact_at(&mut one, 1).unwrap();
        assert_eq!(&one, b"0a");
    }
}

/// Scenarios shared by the crash-point and error-injection tests: a starting store built on a
/// `FaultFs`, a list of steps run under fault, and the checks of what a store must hold.
pub mod harness {
    use std::collections::{BTreeMap, BTreeSet};

    use lockerstore::corpus::noise;
    use lockerstore::{
        ChunkerParams, Error, GcOptions, LicenseMode, Options, Store, TrackKey, UserId,
    };

    use super::{Counts, FaultFs, Image};
    use lockerstore::vfs::Vfs;

    /// The store's directory in every `FaultFs`.
    pub const DIR: &str = "/store";

    /// Options for a store on `fs`: 1 MiB packs, so packs seal and get rewritten, and chunks of
    /// 16/64/256 KiB, so the small tracks of the scenarios have several chunks each.
    pub fn options(fs: &FaultFs, mode: LicenseMode) -> Options {
        Options::default()
            .mode(mode)
            .pack_size_limit(1 << 20)
            .chunker(ChunkerParams {
                min: 16 << 10,
                avg: 64 << 10,
                max: 256 << 10,
            })
            .vfs(fs.vfs())
    }

    /// Opens (or creates) the store on `fs`.
    pub fn open(fs: &FaultFs, mode: LicenseMode) -> lockerstore::Result<Store> {
        Store::open(DIR, options(fs, mode))
    }

    /// Incompressible bytes, like encoded audio.
    pub fn data(label: &str, n: usize) -> Vec<u8> {
        noise(7, label, n)
    }

    /// One operation on a store.
    #[derive(Clone, Debug)]
    pub enum Step {
        /// `put(user, key, data)`.
        Put {
            /// User.
            user: String,
            /// Key.
            key: String,
            /// Bytes.
            data: Vec<u8>,
        },
        /// `delete(user, key)`.
        Delete {
            /// User.
            user: String,
            /// Key.
            key: String,
        },
        /// `set_mode`.
        SetMode(LicenseMode),
        /// `migrate`.
        Migrate,
        /// `gc` with this threshold.
        Gc(f64),
    }

    /// A put step.
    pub fn put(user: &str, key: &str, data: Vec<u8>) -> Step {
        Step::Put {
            user: user.into(),
            key: key.into(),
            data,
        }
    }

    /// A delete step.
    pub fn delete(user: &str, key: &str) -> Step {
        Step::Delete {
            user: user.into(),
            key: key.into(),
        }
    }

    fn ids(user: &str, key: &str) -> (UserId, TrackKey) {
        (UserId::new(user).unwrap(), TrackKey::new(key).unwrap())
    }

    impl Step {
        /// Runs the step.
        pub fn run(&self, store: &Store) -> lockerstore::Result<()> {
            match self {
                Step::Put { user, key, data } => {
                    let (u, k) = ids(user, key);
                    store.put(&u, &k, &data[..]).map(|_| ())
                }
                Step::Delete { user, key } => {
                    let (u, k) = ids(user, key);
                    store.delete(&u, &k)
                }
                Step::SetMode(m) => store.set_mode(*m),
                Step::Migrate => store.migrate(&mut |_| {}).map(|_| ()),
                Step::Gc(t) => store
                    .gc(GcOptions { threshold: *t }, &mut |_| {})
                    .map(|_| ()),
            }
        }

        /// What the step does to the model once it returned Ok.
        pub fn apply(&self, m: &mut Model) {
            match self {
                Step::Put { user, key, data } => {
                    m.tracks.insert((user.clone(), key.clone()), data.clone());
                    m.users.insert(user.clone());
                }
                Step::Delete { user, key } => {
                    m.tracks.remove(&(user.clone(), key.clone()));
                }
                Step::SetMode(mode) => m.mode = *mode,
                Step::Migrate | Step::Gc(_) => {}
            }
        }

        /// A short description.
        pub fn describe(&self) -> String {
            match self {
                Step::Put { user, key, data } => format!("put {user}/{key} ({} B)", data.len()),
                Step::Delete { user, key } => format!("delete {user}/{key}"),
                Step::SetMode(m) => format!("set_mode {m:?}"),
                Step::Migrate => "migrate".into(),
                Step::Gc(t) => format!("gc {t}"),
            }
        }
    }

    /// What the store must hold.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Model {
        /// Tracks by (user, key).
        pub tracks: BTreeMap<(String, String), Vec<u8>>,
        /// Every user that ever put a track (whose locker is listed).
        pub users: BTreeSet<String>,
        /// The license mode.
        pub mode: LicenseMode,
    }

    /// A named scenario.
    pub struct Scenario {
        /// Name.
        pub name: &'static str,
        /// Mode the store is created with.
        pub mode: LicenseMode,
        /// Steps that build the starting state (run without faults).
        pub setup: Vec<Step>,
        /// Steps run under fault.
        pub steps: Vec<Step>,
        /// The store does not exist at the start: opening it (creating it) runs under fault too.
        pub create: bool,
    }

    /// Two users; bob's `t0` has the same bytes as alice's `t0`. About 1.2 MB in
    /// per-user-copy mode: one sealed pack and one open one.
    fn base() -> Vec<Step> {
        vec![
            put("alice", "t0", data("t0", 300_000)),
            put("alice", "t1", data("t1", 250_000)),
            put("alice", "t2", data("t2", 200_000)),
            put("bob", "t0", data("t0", 300_000)),
            put("bob", "t3", data("t3", 150_000)),
        ]
    }

    /// The scenarios by name: put, put-replace, delete, collapse, expand, gc.
    pub fn scenario(name: &str) -> Scenario {
        let puc = LicenseMode::PerUserCopy;
        let sm = LicenseMode::SingleMaster;
        match name {
            "put" => Scenario {
                name: "put",
                mode: puc,
                setup: base(),
                steps: vec![
                    // New content, a new user, content alice already has, a track that repeats
                    // its own chunks, and one that fills the open pack so a new one is created.
                    put("alice", "n1", data("n1", 220_000)),
                    put("carol", "n2", data("t1", 250_000)),
                    put(
                        "alice",
                        "n3",
                        [data("n3", 90_000), data("n3", 90_000)].concat(),
                    ),
                    put("bob", "n4", data("n4", 450_000)),
                ],
                create: false,
            },
            "create" => Scenario {
                name: "create",
                mode: puc,
                setup: vec![],
                steps: vec![put("alice", "first", data("first", 150_000))],
                create: true,
            },
            "put-replace" => Scenario {
                name: "put-replace",
                mode: puc,
                setup: base(),
                steps: vec![
                    put("alice", "t0", data("t0-new", 280_000)),
                    // Shares its first chunks with the track it replaces.
                    put(
                        "bob",
                        "t3",
                        [
                            data("t3", 150_000)[..100_000].to_vec(),
                            data("t3x", 120_000),
                        ]
                        .concat(),
                    ),
                ],
                create: false,
            },
            "delete" => Scenario {
                name: "delete",
                mode: puc,
                setup: base(),
                steps: vec![
                    delete("alice", "t1"),
                    delete("bob", "t0"),
                    delete("alice", "t2"),
                ],
                create: false,
            },
            "collapse" => Scenario {
                name: "collapse",
                mode: puc,
                setup: base(),
                steps: vec![Step::SetMode(sm), Step::Migrate],
                create: false,
            },
            "expand" => Scenario {
                name: "expand",
                mode: sm,
                setup: [
                    base(),
                    vec![
                        put("carol", "t0", data("t0", 300_000)),
                        put("carol", "t1", data("t1", 250_000)),
                    ],
                ]
                .concat(),
                steps: vec![Step::SetMode(puc), Step::Migrate],
                create: false,
            },
            "gc" => Scenario {
                name: "gc",
                mode: puc,
                setup: [
                    base(),
                    vec![
                        put("bob", "t4", data("t4", 260_000)),
                        delete("alice", "t1"),
                        delete("bob", "t0"),
                        delete("bob", "t4"),
                    ],
                ]
                .concat(),
                steps: vec![Step::Gc(1.0), put("alice", "after", data("after", 120_000))],
                create: false,
            },
            other => panic!("no scenario {other}"),
        }
    }

    /// A scenario's starting state: a clean image and what it holds.
    pub struct Start {
        /// The file system after the setup and a clean close.
        pub image: Image,
        /// What it holds.
        pub model: Model,
    }

    /// Builds the starting state of a scenario.
    pub fn start(sc: &Scenario) -> Start {
        let fs = FaultFs::new();
        let mut model = Model {
            tracks: BTreeMap::new(),
            users: BTreeSet::new(),
            mode: sc.mode,
        };
        if sc.create {
            // The store's directory exists, empty and durable; `open` creates the store in it.
            fs.create_dir_all(std::path::Path::new(DIR)).unwrap();
            fs.sync_dir(std::path::Path::new("/")).unwrap();
            return Start {
                image: fs.image_now(),
                model,
            };
        }
        let store = open(&fs, sc.mode).expect("create the store");
        for s in &sc.setup {
            s.run(&store)
                .unwrap_or_else(|e| panic!("setup {}: {e}", s.describe()));
            s.apply(&mut model);
        }
        let v = store.verify().unwrap();
        assert!(v.is_ok(), "setup of {}: {:?}", sc.name, v.problems);
        drop(store);
        Start {
            image: fs.image_now(),
            model,
        }
    }

    /// How far a run got.
    #[derive(Debug)]
    pub struct Outcome {
        /// Steps that returned Ok (applied to the model), before the first failure.
        pub done: usize,
        /// The first failure (the step at `done`).
        pub error: Option<Error>,
    }

    /// A scenario run from its start image with faults armed.
    pub struct Armed {
        pub fs: FaultFs,
        /// The start model with the steps that returned Ok applied.
        pub model: Model,
        /// `None` when opening (creating) the store failed.
        pub store: Option<Store>,
        pub out: Outcome,
        /// The step that failed ("open (create)" for the creation), empty if none did.
        pub failed: String,
    }

    /// Runs `sc` from `st` with faults armed by `arm`: before the store is opened if
    /// `sc.create`, else right after it is.
    pub fn run_armed(sc: &Scenario, st: &Start, arm: &dyn Fn(&FaultFs)) -> Result<Armed, String> {
        let fs = FaultFs::from_image(&st.image);
        if sc.create {
            arm(&fs);
        }
        let mut model = st.model.clone();
        let (store, out) = match open(&fs, sc.mode) {
            Ok(store) => {
                if !sc.create {
                    arm(&fs);
                }
                let out = run_steps(&store, &sc.steps, &mut model);
                (Some(store), out)
            }
            Err(e) if sc.create => (
                None,
                Outcome {
                    done: 0,
                    error: Some(e),
                },
            ),
            Err(e) => return Err(format!("open the start image: {e}")),
        };
        let failed = if store.is_none() {
            "open (create)".to_owned()
        } else {
            sc.steps
                .get(out.done)
                .map(|s| s.describe())
                .unwrap_or_default()
        };
        Ok(Armed {
            fs,
            model,
            store,
            out,
            failed,
        })
    }

    /// The operations a clean run of `sc` makes, counted from its start image (a store created
    /// under fault counts its creation too).
    pub fn clean_run_counts(sc: &Scenario, st: &Start) -> Counts {
        let fs = FaultFs::from_image(&st.image);
        let at_start = fs.counts();
        let store = open(&fs, sc.mode).unwrap();
        let before = if sc.create { at_start } else { fs.counts() };
        let mut model = st.model.clone();
        let out = run_steps(&store, &sc.steps, &mut model);
        assert!(out.error.is_none(), "clean run: {:?}", out.error);
        fs.counts().since(&before)
    }

    /// Panics listing (up to 12 of) `failures`, if there are any.
    pub fn assert_none_failed(what: &str, failures: &[String]) {
        assert!(
            failures.is_empty(),
            "{what}: {} went wrong:\n{}",
            failures.len(),
            failures
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Runs steps until the first error, applying the successful ones to `model`.
    pub fn run_steps(store: &Store, steps: &[Step], model: &mut Model) -> Outcome {
        for (i, s) in steps.iter().enumerate() {
            match s.run(store) {
                Ok(()) => s.apply(model),
                Err(e) => {
                    return Outcome {
                        done: i,
                        error: Some(e),
                    };
                }
            }
        }
        Outcome {
            done: steps.len(),
            error: None,
        }
    }

    /// Checks that `store` holds exactly `m` (mode, every locker's keys, every track's bytes).
    pub fn matches(store: &Store, m: &Model) -> Result<(), String> {
        if store.mode() != m.mode {
            return Err(format!("mode {:?}, expected {:?}", store.mode(), m.mode));
        }
        for u in &m.users {
            let uid = UserId::new(u).unwrap();
            let listed: BTreeSet<String> = match store.list(&uid) {
                Ok(l) => l.into_iter().map(|t| t.key.as_str().to_owned()).collect(),
                Err(Error::UnknownUser(_)) => BTreeSet::new(),
                Err(e) => return Err(format!("list {u}: {e}")),
            };
            let want: BTreeSet<String> = m
                .tracks
                .keys()
                .filter(|(uu, _)| uu == u)
                .map(|(_, k)| k.clone())
                .collect();
            if listed != want {
                return Err(format!("{u} holds {listed:?}, expected {want:?}"));
            }
        }
        for ((u, k), bytes) in &m.tracks {
            let (uid, key) = ids(u, k);
            match store.read_track(&uid, &key) {
                Ok(got) if got == *bytes => {}
                Ok(got) => {
                    return Err(format!(
                        "{u}/{k}: read {} bytes that differ from the {} stored",
                        got.len(),
                        bytes.len()
                    ));
                }
                Err(e) => return Err(format!("{u}/{k}: {e}")),
            }
        }
        let stats = store.stats().map_err(|e| format!("stats: {e}"))?;
        if stats.tracks != m.tracks.len() as u64 {
            return Err(format!(
                "stats: {} tracks, expected {}",
                stats.tracks,
                m.tracks.len()
            ));
        }
        Ok(())
    }

    /// `verify` must find nothing.
    pub fn verified(store: &Store) -> Result<(), String> {
        match store.verify() {
            Ok(r) if r.is_ok() => Ok(()),
            Ok(r) => Err(format!("verify: {:?}", r.problems)),
            Err(e) => Err(format!("verify failed: {e}")),
        }
    }

    /// Checks that `store` is sound and holds `model`, with the step in flight either wholly
    /// done or wholly absent. Returns the model it matched.
    pub fn check_state(
        store: &Store,
        model: &Model,
        in_flight: Option<&Step>,
    ) -> Result<Model, String> {
        verified(store)?;
        let without = matches(store, model);
        if without.is_ok() {
            return Ok(model.clone());
        }
        if let Some(s) = in_flight {
            let mut with = model.clone();
            s.apply(&mut with);
            match matches(store, &with) {
                Ok(()) => return Ok(with),
                Err(e) => {
                    return Err(format!(
                        "neither before ({}) nor after ({e}) {}",
                        without.unwrap_err(),
                        s.describe()
                    ));
                }
            }
        }
        Err(without.unwrap_err())
    }

    /// Runs `steps` again to the end (a landed delete's `TrackNotFound` is fine) and checks the
    /// result: the model, verify, and a conforming layout if a migration ran.
    pub fn finish(store: &Store, steps: &[Step], model: &mut Model) -> Result<(), String> {
        for s in steps {
            match s.run(store) {
                Ok(()) | Err(Error::TrackNotFound { .. }) => s.apply(model),
                Err(e) => return Err(format!("re-running {}: {e}", s.describe())),
            }
        }
        matches(store, model)?;
        verified(store)?;
        if steps.iter().any(|s| matches!(s, Step::Migrate)) {
            let a = store.audit(false).map_err(|e| format!("audit: {e}"))?;
            if !a.conforming {
                return Err(format!("not conforming after migrate: {a:?}"));
            }
        }
        Ok(())
    }

    /// Puts a new track and reads it back; on Ok the model holds it.
    pub fn probe(store: &Store, model: &mut Model, tag: &str) -> lockerstore::Result<()> {
        let s = put("probe", &format!("p-{tag}"), data(tag, 70_000));
        s.run(store)?;
        let (u, k) = ids("probe", &format!("p-{tag}"));
        let got = store.read_track(&u, &k)?;
        assert!(
            got == data(tag, 70_000),
            "probe {tag}: read back other bytes"
        );
        s.apply(model);
        Ok(())
    }
}
