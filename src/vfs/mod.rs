//! The I/O seam: every file operation the engine performs goes through [`Vfs`] and [`VfsFile`].
//!
//! The real implementation, [`StdVfs`], is plain `std::fs` plus memmap2 (in `map.rs`; mapping
//! is `unsafe fn` [`Vfs::map`], whose one caller in the engine, `Packs`, states why its bytes
//! cannot change while mapped). Tests substitute an implementation that injects crashes, torn writes,
//! errors and bit flips without touching the engine. The metadata database reaches the disk through
//! the same seam (`RedbBackend`, an adapter to redb's storage backend trait).

#[allow(unsafe_code)]
mod map;

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use map::Mapped;

/// An open file: positional reads and writes, so one handle serves many threads.
#[allow(clippy::len_without_is_empty)]
pub trait VfsFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
}

/// Whole-file and directory operations.
pub trait Vfs: Send + Sync + Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// Opens an existing file for reading and writing, or creates it when `create` is set.
    fn open_rw(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>>;
    /// Reads a whole (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Atomically replaces `to` by `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Lists the names in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// True when the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Maps the first `len` bytes of a file read-only.
    ///
    /// # Safety
    /// The caller guarantees that those bytes are neither changed nor cut off, by this process
    /// or any other, while the returned map lives: with a real map, a write is undefined
    /// behaviour and a truncation raises SIGBUS. The engine maps only the committed prefix of
    /// append-only packs (the argument is at the one call, in `Packs`).
    #[allow(unsafe_code)]
    unsafe fn map(&self, path: &Path, len: u64) -> io::Result<Arc<dyn Mapped>>;
    /// Takes an exclusive advisory lock on `path`, a directory or a file (a file is created if
    /// missing), for the life of the returned guard; the OS drops it when the process dies.
    /// `Ok(None)` when another holder has it (another process, or another guard of this one).
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Send + Sync + Debug>>>;
    /// Bytes an unprivileged writer can still add to the file system holding `path`.
    fn available_space(&self, path: &Path) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdVfs;

#[derive(Debug)]
struct StdFile(File);

impl VfsFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Vfs for StdVfs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn open_rw(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    #[allow(unsafe_code)]
    unsafe fn map(&self, path: &Path, len: u64) -> io::Result<Arc<dyn Mapped>> {
        let file = File::open(path)?;
        // SAFETY: the caller keeps the first `len` bytes unchanged while the map lives (this
        // function's contract).
        Ok(Arc::new(unsafe { map::FileMap::new(&file, len)? }))
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Send + Sync + Debug>>> {
        // flock(2) on a directory opened read-only works like on a file.
        let file = if path.is_dir() {
            File::open(path)?
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLock(file)))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn available_space(&self, path: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// An flock(2) held on an open file, released explicitly when dropped.
///
/// Closing the descriptor alone is not enough: the lock belongs to the open file description,
/// and a child that another thread of this process forks (`std::process::Command`) shares that
/// description until its `exec` closes it. Without the explicit unlock, a store dropped in that
/// window would stay locked against the next open of this very process (seen in CI: the crash
/// test reopened a store while its sibling test was spawning a child, and got `Locked`).
#[derive(Debug)]
struct FileLock(File);

impl Drop for FileLock {
    fn drop(&mut self) {
        // An error here leaves the lock to the close that follows; nothing better can be done.
        let _ = self.0.unlock();
    }
}

/// A metadata read that reached past the end of `meta.redb`: the file is shorter than the
/// database inside it says, so it is damaged (truncated), not unreadable. `RedbBackend` wraps
/// the short read in this, and the conversion of redb's errors reports it as `Corrupted`.
#[derive(Debug)]
pub(crate) struct ReadPastEnd {
    offset: u64,
    len: usize,
    file_len: Option<u64>,
}

impl std::fmt::Display for ReadPastEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read of {} bytes at offset {} past the end of the file",
            self.len, self.offset
        )?;
        match self.file_len {
            Some(n) => write!(f, " ({n} bytes long; truncated?)"),
            None => write!(f, " (truncated?)"),
        }
    }
}

impl std::error::Error for ReadPastEnd {}

/// Adapts a [`VfsFile`] to redb's storage backend, so metadata I/O goes through the seam too.
#[derive(Debug)]
pub(crate) struct RedbBackend {
    pub(crate) file: Arc<dyn VfsFile>,
}

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof && e.raw_os_error().is_none() {
                // redb asked for bytes its own header says the file holds: the file is short.
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    ReadPastEnd {
                        offset,
                        len: out.len(),
                        file_len: self.file.len().ok(),
                    },
                )
            } else {
                e
            }
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
}
