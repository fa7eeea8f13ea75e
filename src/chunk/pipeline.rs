//! The parallel part of an ingest: one upload's chunking and hashing spread over the machine's
//! idle cores, without changing a single cut point or hash.
//!
//! A put's own thread always does the work in order: it cuts each region with FastCDC, hashes the
//! chunks and hands them to the store stage (dedup lookup, compress-or-keep-raw, pack append).
//! Beside it, the put *offers* work a helper thread may take:
//!
//! - the two halves of the track fingerprint and of the audio fingerprint (BLAKE3 subtrees,
//!   merged with `blake3::hazmat`; the result is the plain BLAKE3 of the bytes);
//! - the *pieces* of a large region (about [`PIECE`] bytes each), cut as if a chunk started at the
//!   piece's start, and their chunks hashed.
//!
//! Every offer is claimed exactly once (an atomic flag), by the helper or by the put's thread.
//! A piece the put's thread claims is simply cut as part of its own chain, so it costs nothing
//! extra. A piece a helper cut is joined to the chain by *resynchronisation*: the put's thread
//! keeps cutting from its last true cut point until one of its chunks starts where one of the
//! piece's chunks starts. FastCDC's choice of a chunk's end depends only on the bytes from the
//! chunk's start to at most `max` bytes further, so from that common start on both cuttings are
//! the same; the helper cuts `max` bytes past the piece's end so that every chunk it returns saw
//! its full window. The result is identical to cutting the region in one pass (tested), and
//! the extra work is about one chunk per piece a helper took.
//!
//! Helpers only take offers while a core is idle: [`Cores`] counts the threads doing ingest
//! work, and a helper waits until that count is below the number of cores. Under a load of
//! concurrent puts, each put runs on its own thread alone and no work is duplicated; when a put
//! has the machine to itself, or another put waits for an fsync, its helper fills the idle core.
//!
//! An upload larger than the segmenter's window is streamed instead: its thread reads and cuts,
//! a helper hashes the chunks (ids and the fingerprint, in order), and bounded crossbeam channels
//! between them keep memory flat whatever the upload's size.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_root};
use crossbeam::channel::{Receiver, Sender, bounded, unbounded};
use fastcdc::v2020::FastCDC;

use crate::chunk::Chunker;
use crate::error::Result;
use crate::ids::{ChunkId, Fingerprint};

/// Target size of a piece of a region offered to a helper. At least `2 x max` chunk size is
/// always kept per piece, so a piece holds several chunks.
pub(crate) const PIECE: usize = 2 << 20;

/// Below this size an upload is handled on its thread alone: a helper would cost more to start
/// than it saves.
const PARALLEL_MIN: usize = 1 << 20;

/// Chunks in flight between the reading and the hashing thread of a streamed upload, each way.
const STREAM_QUEUE: usize = 4;

/// Counts the threads doing ingest work, so helpers only use idle cores.
#[derive(Debug)]
pub(crate) struct Cores {
    busy: Mutex<usize>,
    freed: Condvar,
    cores: usize,
}

/// One thread counted as busy until dropped.
pub(crate) struct Busy<'a>(&'a Cores);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut n = self.0.busy.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        drop(n);
        self.0.freed.notify_all();
    }
}

impl Cores {
    pub(crate) fn new(cores: usize) -> Cores {
        Cores {
            busy: Mutex::new(0),
            freed: Condvar::new(),
            cores: cores.max(1),
        }
    }

    /// The machine's cores, as the OS reports them.
    pub(crate) fn of_machine() -> Cores {
        Cores::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Counts the calling thread as busy.
    pub(crate) fn enter(&self) -> Busy<'_> {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Busy(self)
    }

    /// Counts the calling thread as busy if a core is idle; otherwise waits up to `wait` for
    /// one to become idle and returns `None` if none did.
    fn enter_idle(&self, wait: Duration) -> Option<Busy<'_>> {
        let mut n = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if *n >= self.cores {
            n = self
                .freed
                .wait_timeout(n, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if *n < self.cores {
            *n += 1;
            Some(Busy(self))
        } else {
            None
        }
    }

    /// Wakes the waiting helpers (one of them may have no more work to wait for).
    fn wake(&self) {
        self.freed.notify_all();
    }
}

/// The emitted chunks go here, in order: plain bytes and id.
pub(crate) type Sink<'s> = dyn FnMut(&[u8], ChunkId) -> Result<()> + 's;

/// BLAKE3 of the concatenation of `parts`, which may be split into two subtrees.
struct Sequence<'a> {
    parts: Vec<&'a [u8]>,
    len: u64,
}

impl<'a> Sequence<'a> {
    fn new(parts: Vec<&'a [u8]>) -> Sequence<'a> {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        Sequence { parts, len }
    }

    /// Where the sequence splits into two BLAKE3 subtrees, if it is longer than one BLAKE3 chunk.
    fn split(&self) -> Option<u64> {
        (self.len > blake3::CHUNK_LEN as u64).then(|| left_subtree_len(self.len))
    }

    /// Feeds bytes `from..to` of the concatenation to `hasher`.
    fn feed(&self, hasher: &mut blake3::Hasher, from: u64, to: u64) {
        let mut at = 0u64;
        for p in &self.parts {
            let (s, e) = (at, at + p.len() as u64);
            at = e;
            let (lo, hi) = (s.max(from), e.min(to));
            if lo < hi {
                hasher.update(&p[(lo - s) as usize..(hi - s) as usize]);
            }
        }
    }

    /// The chaining value of the left (`right == false`) or right subtree.
    fn half(&self, right: bool) -> ChainingValue {
        let split = self.split().expect("only split sequences have halves");
        let mut h = blake3::Hasher::new();
        if right {
            h.set_input_offset(split);
            self.feed(&mut h, split, self.len);
        } else {
            self.feed(&mut h, 0, split);
        }
        h.finalize_non_root()
    }

    fn whole(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        self.feed(&mut h, 0, self.len);
        *h.finalize().as_bytes()
    }
}

/// A piece of a region: bytes `start..end`, within the region `start..region_end`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: usize,
    end: usize,
    region_end: usize,
    /// The first piece of its region: only the put's thread cuts it, from the region's start.
    first: bool,
}

#[derive(Clone, Copy, Debug)]
enum Job {
    /// Half of the fingerprint (sequence 0) or of the audio fingerprint (sequence 1).
    Half {
        seq: usize,
        right: bool,
    },
    Piece(usize),
}

enum Out {
    Half(ChainingValue),
    Chunks(Vec<(usize, usize, ChunkId)>),
}

/// One upload's work, shared between its thread and a helper.
struct Work<'a> {
    chunker: &'a Chunker,
    buf: &'a [u8],
    seqs: [Option<Sequence<'a>>; 2],
    pieces: Vec<Piece>,
    jobs: Vec<Job>,
    claimed: Vec<AtomicBool>,
    /// Set when the put's thread no longer needs anything (done or failed).
    over: AtomicBool,
}

impl Work<'_> {
    fn claim(&self, job: usize) -> bool {
        !self.claimed[job].swap(true, Ordering::AcqRel)
    }

    fn cdc<'b>(&self, data: &'b [u8]) -> FastCDC<'b> {
        self.chunker.cutter(data)
    }

    fn run(&self, job: usize) -> Out {
        match self.jobs[job] {
            Job::Half { seq, right } => Out::Half(
                self.seqs[seq]
                    .as_ref()
                    .expect("halves exist only for present sequences")
                    .half(right),
            ),
            Job::Piece(k) => Out::Chunks(self.cut_piece(self.pieces[k])),
        }
    }

    /// Cuts a piece as if a chunk started at its start; returns its chunks that start before its
    /// end, hashed. It reads up to `max` bytes past the end, so each of them saw its full window.
    fn cut_piece(&self, p: Piece) -> Vec<(usize, usize, ChunkId)> {
        let stop = (p.end + self.chunker.params.max as usize).min(p.region_end);
        self.cdc(&self.buf[p.start..stop])
            .map(|c| (p.start + c.offset, p.start + c.offset + c.length))
            .take_while(|&(s, _)| s < p.end)
            .map(|(s, e)| (s, e, ChunkId::of(&self.buf[s..e])))
            .collect()
    }

    /// Continues the region's true cutting from `pos` (a true chunk start): emits the chunks that
    /// start before `stop`, and returns where the next one starts. Given a helper's chunks of the
    /// piece ending at `stop`, it switches to them at the first chunk start the two share.
    fn chain(
        &self,
        pos: usize,
        stop: usize,
        region_end: usize,
        piece: Option<&[(usize, usize, ChunkId)]>,
        sink: &mut Sink<'_>,
    ) -> Result<usize> {
        for c in self.cdc(&self.buf[pos..region_end]) {
            let (s, e) = (pos + c.offset, pos + c.offset + c.length);
            if s >= stop {
                return Ok(s);
            }
            if let Some(piece) = piece
                && let Ok(i) = piece.binary_search_by_key(&s, |c| c.0)
            {
                for &(s, e, id) in &piece[i..] {
                    sink(&self.buf[s..e], id)?;
                }
                return Ok(piece.last().map_or(region_end, |c| c.1));
            }
            sink(&self.buf[s..e], ChunkId::of(&self.buf[s..e]))?;
        }
        Ok(region_end)
    }

    /// A helper: takes offers while a core is idle, pieces from the last one backwards (the put's
    /// thread works forwards, so they meet once), then fingerprint halves.
    fn help(&self, cores: &Cores, tx: &Sender<(usize, Out)>) {
        let order = (0..self.jobs.len())
            .rev()
            .filter(|&j| matches!(self.jobs[j], Job::Piece(_)))
            .chain((0..self.jobs.len()).filter(|&j| matches!(self.jobs[j], Job::Half { .. })));
        for job in order {
            let _busy = loop {
                if self.over.load(Ordering::Acquire) || self.claimed[job].load(Ordering::Acquire) {
                    break None;
                }
                if let Some(b) = cores.enter_idle(Duration::from_millis(2)) {
                    break Some(b);
                }
            };
            if _busy.is_none() || !self.claim(job) {
                continue;
            }
            if tx.send((job, self.run(job))).is_err() {
                return;
            }
        }
    }
}

/// Results of the jobs a helper ran, gathered by the put's thread.
struct Results<'a> {
    rx: Receiver<(usize, Out)>,
    got: Vec<Option<Out>>,
    busy: Option<Busy<'a>>,
    cores: &'a Cores,
}

impl Results<'_> {
    /// The result of `job`, which the helper claimed, running unclaimed fingerprint halves
    /// meanwhile; the thread counts as idle while it blocks.
    fn wait(&mut self, work: &Work<'_>, job: usize) -> Out {
        loop {
            if let Some(out) = self.got[job].take() {
                return out;
            }
            while let Ok((j, out)) = self.rx.try_recv() {
                self.got[j] = Some(out);
            }
            if self.got[job].is_some() {
                continue;
            }
            let spare = (0..work.jobs.len())
                .find(|&j| matches!(work.jobs[j], Job::Half { .. }) && work.claim(j));
            if let Some(j) = spare {
                self.got[j] = Some(work.run(j));
                continue;
            }
            self.busy = None;
            let (j, out) = self.rx.recv().expect("a claimed job's helper reports");
            self.busy = Some(self.cores.enter());
            self.got[j] = Some(out);
        }
    }
}

/// What hashing an upload yields besides its chunks.
pub(crate) struct Hashes {
    pub fingerprint: Fingerprint,
    pub audio: Option<[u8; 32]>,
}

/// Cuts each of `regions` of `buf` (a partition of it), hashes the chunks and emits them in
/// order to `sink`; returns the fingerprint of `buf` and the BLAKE3 of the concatenated `audio`
/// ranges (if any). Uses an idle core if there is one.
pub(crate) fn chunk_buffer(
    chunker: &Chunker,
    cores: &Cores,
    buf: &[u8],
    regions: &[(usize, usize)],
    audio: &[(usize, usize)],
    sink: &mut Sink<'_>,
) -> Result<Hashes> {
    chunk_buffer_with(chunker, cores, buf, regions, audio, false, sink)
}

/// [`chunk_buffer`]; with `all_offers_taken`, every offer is run first as if a helper had
/// taken it, so the tests exercise the joining of every piece.
fn chunk_buffer_with(
    chunker: &Chunker,
    cores: &Cores,
    buf: &[u8],
    regions: &[(usize, usize)],
    audio: &[(usize, usize)],
    all_offers_taken: bool,
    sink: &mut Sink<'_>,
) -> Result<Hashes> {
    let max = chunker.params.max as usize;
    let mut pieces = Vec::new();
    for &(start, end) in regions {
        let len = end - start;
        let n = ((len + PIECE / 2) / PIECE).clamp(1, (len / (2 * max)).max(1));
        for k in 0..n {
            pieces.push(Piece {
                start: start + len * k / n,
                end: start + len * (k + 1) / n,
                region_end: end,
                first: k == 0,
            });
        }
    }
    let seqs = [
        Some(Sequence::new(vec![buf])),
        (!audio.is_empty())
            .then(|| Sequence::new(audio.iter().map(|&(s, e)| &buf[s..e]).collect())),
    ];
    let mut jobs = Vec::new();
    for (seq, s) in seqs.iter().enumerate() {
        if s.as_ref().and_then(Sequence::split).is_some() {
            jobs.push(Job::Half { seq, right: false });
            jobs.push(Job::Half { seq, right: true });
        }
    }
    let mut piece_job = vec![None; pieces.len()];
    for (k, p) in pieces.iter().enumerate() {
        if !p.first {
            piece_job[k] = Some(jobs.len());
            jobs.push(Job::Piece(k));
        }
    }
    let work = Work {
        chunker,
        buf,
        seqs,
        pieces,
        claimed: jobs.iter().map(|_| AtomicBool::new(false)).collect(),
        jobs,
        over: AtomicBool::new(false),
    };
    let (tx, rx) = unbounded();
    let mut results = Results {
        rx,
        got: work.jobs.iter().map(|_| None).collect(),
        busy: Some(cores.enter()),
        cores,
    };
    if all_offers_taken {
        for job in 0..work.jobs.len() {
            work.claim(job);
            results.got[job] = Some(work.run(job));
        }
    }
    let helper_wanted = cores.cores > 1 && buf.len() >= PARALLEL_MIN && !work.jobs.is_empty();
    std::thread::scope(|scope| {
        // Without a helper (it could not be started), the put's thread claims every job itself.
        let _helper = helper_wanted
            .then(|| {
                let (work, tx) = (&work, tx.clone());
                std::thread::Builder::new()
                    .name("lockerstore-helper".into())
                    .spawn_scoped(scope, move || work.help(cores, &tx))
                    .ok()
            })
            .flatten();
        drop(tx);
        // Ends the helper's wait whatever way this closure is left.
        struct Over<'w, 'a>(&'w Work<'a>, &'w Cores);
        impl Drop for Over<'_, '_> {
            fn drop(&mut self) {
                self.0.over.store(true, Ordering::Release);
                self.1.wake();
            }
        }
        let _over = Over(&work, cores);
        let mut pos = 0;
        for (k, p) in work.pieces.iter().enumerate() {
            if p.first {
                pos = p.start;
            }
            pos = match piece_job[k] {
                Some(job) if !work.claim(job) => {
                    let Out::Chunks(chunks) = results.wait(&work, job) else {
                        unreachable!("a piece job yields chunks")
                    };
                    work.chain(pos, p.end, p.region_end, Some(&chunks), sink)?
                }
                _ => work.chain(pos, p.end, p.region_end, None, sink)?,
            };
        }
        let mut hash = |seq: usize| -> Option<blake3::Hash> {
            let s = work.seqs[seq].as_ref()?;
            if s.split().is_none() {
                return Some(blake3::Hash::from_bytes(s.whole()));
            }
            let mut half = |right: bool| {
                let job = work
                    .jobs
                    .iter()
                    .position(
                        |j| matches!(*j, Job::Half { seq: q, right: r } if q == seq && r == right),
                    )
                    .expect("a split sequence has both halves");
                let out = if work.claim(job) {
                    work.run(job)
                } else {
                    results.wait(&work, job)
                };
                let Out::Half(cv) = out else {
                    unreachable!("a half job yields a chaining value")
                };
                cv
            };
            let (l, r) = (half(false), half(true));
            Some(merge_subtrees_root(&l, &r, Mode::Hash))
        };
        let fingerprint = Fingerprint::from(hash(0).expect("the whole upload is hashed"));
        let audio = hash(1).map(|h| *h.as_bytes());
        Ok(Hashes { fingerprint, audio })
    })
}

/// Chunks a stream of any length: this thread reads and cuts, a helper hashes each chunk and
/// the whole stream in order. Returns the stream's length and fingerprint.
pub(crate) fn chunk_stream(
    chunker: &Chunker,
    reader: impl Read,
    sink: &mut Sink<'_>,
) -> Result<(u64, Fingerprint)> {
    let (to_hash, hash_rx) = bounded::<Vec<u8>>(STREAM_QUEUE);
    let (hashed_tx, hashed) = bounded::<(Vec<u8>, ChunkId)>(STREAM_QUEUE);
    let mut len = 0u64;
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("lockerstore-hasher".into())
            .spawn_scoped(scope, move || {
                let mut whole = blake3::Hasher::new();
                for chunk in hash_rx {
                    whole.update(&chunk);
                    let id = ChunkId::of(&chunk);
                    if hashed_tx.send((chunk, id)).is_err() {
                        break;
                    }
                }
                Fingerprint::from(whole.finalize())
            });
        let Ok(hasher) = spawned else {
            // No thread to be had: hash here.
            let mut whole = blake3::Hasher::new();
            for chunk in chunker.chunks(reader) {
                let chunk = chunk?;
                whole.update(&chunk);
                len += chunk.len() as u64;
                sink(&chunk, ChunkId::of(&chunk))?;
            }
            return Ok((len, Fingerprint::from(whole.finalize())));
        };
        // Chunks sent to the hasher and not yet received back.
        let mut pending = 0usize;
        let outcome = (|| -> Result<()> {
            let mut receive = |pending: &mut usize, all: bool| -> Result<()> {
                while *pending > 0 {
                    let next = if all || *pending >= STREAM_QUEUE {
                        hashed.recv().ok()
                    } else {
                        hashed.try_recv().ok()
                    };
                    // Nothing back: the hasher is still busy (or died; its join reports it).
                    let Some((chunk, id)) = next else { break };
                    *pending -= 1;
                    sink(&chunk, id)?;
                }
                Ok(())
            };
            for chunk in chunker.chunks(reader) {
                let chunk = chunk?;
                len += chunk.len() as u64;
                receive(&mut pending, false)?;
                if to_hash.send(chunk).is_err() {
                    break;
                }
                pending += 1;
            }
            receive(&mut pending, true)
        })();
        drop(to_hash);
        drop(hashed);
        let fingerprint = match hasher.join() {
            Ok(f) => f,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        outcome.map(|()| (len, fingerprint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::error::Error;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        crate::corpus::noise(seed, "pipeline test", len)
    }

    fn chunker() -> Chunker {
        Chunker {
            params: ChunkerParams {
                min: 4 << 10,
                avg: 16 << 10,
                max: 64 << 10,
            },
            seed: 7,
        }
    }

    fn serial(c: &Chunker, buf: &[u8], regions: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for &(s, e) in regions {
            let cdc = c.cutter(&buf[s..e]);
            out.extend(cdc.map(|x| (s + x.offset, s + x.offset + x.length)));
        }
        out
    }

    /// Runs `chunk_buffer` with pieces forced small (by scaling the input) and every offer
    /// either taken by the helper or not, and checks it against one serial pass.
    fn check(len: usize, seed: u64, regions: &[(usize, usize)], audio: &[(usize, usize)]) {
        let buf = data(len, seed);
        let c = chunker();
        for (cores, taken) in [(1, false), (2, false), (4, false), (1, true)] {
            let mut got = Vec::new();
            let mut ids = Vec::new();
            let cores_ = Cores::new(cores);
            let h = chunk_buffer_with(&c, &cores_, &buf, regions, audio, taken, &mut |b, id| {
                let start = b.as_ptr() as usize - buf.as_ptr() as usize;
                got.push((start, start + b.len()));
                ids.push(id);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                got,
                serial(&c, &buf, regions),
                "cores {cores}, taken {taken}"
            );
            for (&(s, e), id) in got.iter().zip(&ids) {
                assert_eq!(*id, ChunkId::of(&buf[s..e]));
            }
            assert_eq!(h.fingerprint, Fingerprint::of(&buf));
            let mut concat = Vec::new();
            for &(s, e) in audio {
                concat.extend_from_slice(&buf[s..e]);
            }
            assert_eq!(
                h.audio,
                (!audio.is_empty()).then(|| *blake3::hash(&concat).as_bytes())
            );
        }
    }

    #[test]
    fn parallel_cutting_equals_one_pass() {
        // 64 KiB max chunks: a 9 MiB region is split into 2 pieces, a 20 MiB one into 5.
        for (i, len) in [0usize, 1, 1000, 1025, 300_000, 9 << 20, 20 << 20]
            .into_iter()
            .enumerate()
        {
            let regions: Vec<_> = (len > 0).then_some((0, len)).into_iter().collect();
            check(len, i as u64 + 1, &regions, &regions);
        }
        let len = 13 << 20;
        check(
            len,
            99,
            &[(0, 4096), (4096, 12 << 20), (12 << 20, len)],
            &[(4096, 6 << 20), (6 << 20, 12 << 20)],
        );
    }

    #[test]
    fn low_entropy_data_with_max_size_chunks_resynchronises() {
        // Zeros: every chunk is cut at `max`, so the piece (starting mid-zeros, off the chain's
        // grid) cannot meet the chain there; they meet in the random bytes after it.
        let c = chunker();
        let len = (10 << 20) + 12345;
        let mut buf = vec![0u8; len];
        buf[6 << 20..].copy_from_slice(&data(len - (6 << 20), 3));
        let regions = [(0, buf.len())];
        let mut got = Vec::new();
        let h = chunk_buffer_with(
            &c,
            &Cores::new(1),
            &buf,
            &regions,
            &[],
            true,
            &mut |b, _| {
                got.push(b.len());
                Ok(())
            },
        )
        .unwrap();
        let want: Vec<_> = serial(&c, &buf, &regions)
            .iter()
            .map(|(s, e)| e - s)
            .collect();
        assert_eq!(got, want);
        assert_eq!(h.fingerprint, Fingerprint::of(&buf));
    }

    #[test]
    fn halves_merge_to_the_plain_hash() {
        for len in [1025usize, 2048, 2049, 4096 * 3 + 7, 1 << 20, (1 << 20) + 1] {
            let buf = data(len, len as u64);
            let cut = len / 3;
            let seq = Sequence::new(vec![&buf[..cut], &buf[cut..]]);
            let root = merge_subtrees_root(&seq.half(false), &seq.half(true), Mode::Hash);
            assert_eq!(root, blake3::hash(&buf), "len {len}");
        }
    }

    #[test]
    fn a_failing_sink_stops_the_put_and_its_helper() {
        let buf = data(9 << 20, 5);
        let mut n = 0;
        let err = chunk_buffer(
            &chunker(),
            &Cores::new(2),
            &buf,
            &[(0, buf.len())],
            &[],
            &mut |_, _| {
                n += 1;
                if n == 3 {
                    Err(Error::corrupted("stop"))
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(err, Err(Error::Corrupted { .. })));
    }

    #[test]
    fn streaming_equals_one_pass_and_reports_reader_errors() {
        let buf = data(3 << 20, 11);
        let c = chunker();
        let mut got = Vec::new();
        let (len, fp) = chunk_stream(&c, &buf[..], &mut |b, id| {
            assert_eq!(id, ChunkId::of(b));
            got.push(b.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(len, buf.len() as u64);
        assert_eq!(fp, Fingerprint::of(&buf));
        let want: Vec<_> = serial(&c, &buf, &[(0, buf.len())])
            .iter()
            .map(|(s, e)| e - s)
            .collect();
        assert_eq!(got, want);

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("gone"));
                }
                let n = b.len().min(self.0);
                b[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let err = chunk_stream(&c, Failing(1 << 20), &mut |_, _| Ok(()));
        assert!(matches!(err, Err(Error::Upload { .. })));
    }
}
