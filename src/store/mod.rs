//! The store: the façade callers hold. It opens the engine (`open.rs`) and hands each call to
//! the subsystem that does it: the write path (`crate::write`), the read path (`crate::read`),
//! maintenance (`crate::maint`) and ownership proofs (`crate::ownership`). It keeps no state of
//! its own beyond what open reported.

mod open;
mod options;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::chunk::ChunkerParams;
use crate::engine::Engine;
use crate::error::Result;
use crate::index::write_with;
use crate::maint::audit::AuditReport;
use crate::maint::gc::{GcOptions, GcProgress, GcReport};
use crate::maint::migrate::{MigrationProgress, MigrationReport};
use crate::maint::verify::{DroppedDamage, VerifyReport};
use crate::maint::whatif::{HolderWhatIfs, WhatIf};
use crate::names::{RightsHolder, TrackKey, UserId};
use crate::ownership::{Challenge, OwnershipClaim, ProofOutcome, Proofs};
use crate::pack::RecoveryReport;
use crate::policy::quota::{Quota, QuotaUsage};
use crate::policy::{Licence, Licences, LicenseMode};
use crate::read::TrackReader;
use crate::read::catalog::{Stats, TrackInfo};
use crate::write::{PutOptions, PutOutcome, Writer};

pub use open::StoreFileRepair;
pub use options::{Options, PackDurability};

/// An open store. Cheap to clone; all clones share one store. `Send + Sync`: any number of
/// threads may ingest, read and delete at once.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Arc<Engine>,
    writer: Arc<Writer>,
    proofs: Arc<Proofs>,
    recovery: RecoveryReport,
    is_new: bool,
}

impl Store {
    /// Opens the store in `dir`, creating it when `options.create` is set and the directory is
    /// missing or empty (or finishing a creation an earlier open began). Recovers from a crash:
    /// removes packs no commit refers to and cuts uncommitted pack tails. A second process
    /// opening the same store gets `Error::Locked`: the lock is on the directory itself, so
    /// removing the `LOCK` file does not release it. A directory holding a store's metadata or
    /// packs without a valid `STORE` file is refused with `Error::StoreFileLost` and left as it
    /// is, whatever `options.create` says (see [`Store::repair_store_file`]).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let opened = open::open(dir, options)?;
        Ok(Store {
            engine: Arc::new(opened.engine),
            writer: Arc::new(opened.writer),
            proofs: Arc::new(Proofs::default()),
            recovery: opened.recovery,
            is_new: opened.is_new,
        })
    }

    /// Recreates a store's metadata in the empty (or missing) directory `dir` from its bucket
    /// alone, after the node's disk was lost: the bucket named by `options.object_packs`
    /// holds the store's `STORE` object, its packs and the journal of its metadata
    /// (docs/DESIGN.md 13.8). Replays the newest checkpoint and every journaled commit after
    /// it; then [`Store::open`] opens the store as usual (the cache starts empty). Refuses a
    /// directory holding anything but what an interrupted rebuild leaves, a bucket with no
    /// store, and a journal with a missing or damaged object (`Corrupted`: the metadata would
    /// lack acknowledged commits). Feature `object-store`.
    #[cfg(feature = "object-store")]
    pub fn rebuild(dir: impl AsRef<Path>, options: &Options) -> Result<crate::RebuildReport> {
        open::rebuild(dir.as_ref(), options)
    }

    /// For a store whose packs live in a bucket: writes a checkpoint of its metadata there
    /// (every row, as of the last commit) and deletes the journal objects it replaces, so a
    /// rebuild replays less. The store also writes one on its own every 1,024 commits. Returns
    /// the number of the commit it holds; `None` for a store whose packs are local (it keeps
    /// no journal).
    pub fn checkpoint(&self) -> Result<Option<u64>> {
        self.engine.meta().checkpoint()
    }

    /// Rewrites a store's `STORE` file from the copy its metadata keeps, for a store that lost
    /// it or has a damaged one (open refuses such a store with [`Error::StoreFileLost`]). Takes
    /// the store's lock, so no process may have the store open. Refuses, changing nothing, when
    /// `meta.redb` is missing or unreadable, holds no copy (the store was created by an earlier
    /// build and never opened by this one), or `STORE` was written by a newer version. Only
    /// `options.vfs` is used.
    pub fn repair_store_file(dir: impl AsRef<Path>, options: Options) -> Result<StoreFileRepair> {
        open::repair_store_file(dir, options)
    }

    /// True when this open created the store, or finished a creation an earlier open began.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        self.engine.dir()
    }

    /// What recovery did when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The chunker sizes this store was created with.
    pub fn chunker_params(&self) -> ChunkerParams {
        self.engine.chunker().params
    }

    /// The license mode: the licence policy's default, for tracks whose rights holder has no
    /// licence entry in force.
    pub fn mode(&self) -> LicenseMode {
        self.engine.policy().mode()
    }

    /// Sets the license mode (the policy's default), durably. New ingests follow it at once;
    /// existing data keeps its layout until migrated.
    pub fn set_mode(&self, mode: LicenseMode) -> Result<()> {
        self.change_policy(|l| l.default = mode)
    }

    /// Changes the stored policy as `change` says, in one transaction that reads the stored
    /// one (so a change another node made meanwhile is kept), under the policy's lock, so no
    /// ingest starts under the old policy after this returns.
    fn change_policy(&self, change: impl Fn(&mut Licences)) -> Result<()> {
        let engine = &self.engine;
        engine.policy().replace(|_| {
            write_with(engine.meta(), |w| {
                let (mut licences, version) = crate::policy::stored(&*w)?;
                change(&mut licences);
                crate::policy::store(w, &licences, version + 1)?;
                Ok((licences, version + 1))
            })
        })
    }

    /// The licence policy: the default and the entries per rights holder.
    pub fn licences(&self) -> Licences {
        self.engine.policy().licences()
    }

    /// Sets `holder`'s licence entry, or removes it (`None`: its tracks follow the default),
    /// durably. New ingests follow it at once; the holder's stored tracks keep their layout
    /// until [`Store::migrate`] moves them (only theirs: tracks of other holders are left
    /// alone). An entry with an end (`Licence::until`) stops applying at that moment; a
    /// migration after it moves the holder's tracks back to the default.
    pub fn set_licence(&self, holder: &RightsHolder, licence: Option<Licence>) -> Result<()> {
        self.change_policy(|l| match licence {
            Some(entry) => {
                l.entries.insert(holder.clone(), entry);
            }
            None => {
                l.entries.remove(holder);
            }
        })
    }

    /// Changes the rights holder of `user`'s track `key` (`None`: unknown), a metadata
    /// operation: no byte of the track moves. If the new holder's licence wants the track in
    /// another domain, the track is pending until [`Store::migrate`] moves it (and
    /// [`Store::audit`] reports it meanwhile).
    pub fn set_rights_holder(
        &self,
        user: &UserId,
        key: &TrackKey,
        holder: Option<RightsHolder>,
    ) -> Result<()> {
        crate::write::holder::set_rights_holder(&self.engine, user, key, holder)
    }

    /// Stores the bytes of `reader` as `user`'s track `key`, replacing any track under that key
    /// atomically. Memory use is bounded by the segmenter's window whatever the track's size.
    /// Returns once the track is durable. If it returns an error raised before the metadata
    /// commit (a failing reader, a full disk, a pack write or fsync error), nothing of it is
    /// visible, before or after a crash. If the commit itself fails (its fsync), the outcome is
    /// unknown, as for any database: the store is poisoned, and after reopening the track is
    /// either wholly there or wholly absent.
    ///
    /// In single-master mode the outcome's `new_chunks`/`new_bytes`, and the put's duration (a
    /// put of content already stored writes and syncs less), reveal whether another user holds
    /// the content: they are for the operator, never for the uploading client ([`PutOutcome`]).
    pub fn put(&self, user: &UserId, key: &TrackKey, reader: impl Read) -> Result<PutOutcome> {
        self.put_with(user, key, reader, &PutOptions::default())
    }

    /// [`Store::put`] with options: a track stored quota-exempt counts in the user's usage but
    /// not against their limits. A put that would take the user's counted tracks past their
    /// quota ([`Store::set_quota`]) fails with [`crate::Error::QuotaExceeded`] and stores
    /// nothing; the check runs in the commit that links the track, so concurrent puts cannot
    /// both take the last free byte.
    pub fn put_with(
        &self,
        user: &UserId,
        key: &TrackKey,
        reader: impl Read,
        options: &PutOptions,
    ) -> Result<PutOutcome> {
        crate::write::put(&self.engine, &self.writer, user, key, reader, options)
    }

    /// Sets `user`'s limits, durably; the user is created (with no tracks) if unknown. Lowering
    /// a limit below the current usage removes nothing: further puts that grow the usage fail.
    pub fn set_quota(&self, user: &UserId, quota: Quota) -> Result<()> {
        crate::write::set_quota(&self.engine, &self.writer, user, quota)
    }

    /// `user`'s limits and usage (counted and exempt).
    pub fn quota(&self, user: &UserId) -> Result<QuotaUsage> {
        crate::read::catalog::quota(&self.engine, user)
    }

    /// Deletes a track. Its chunks lose a reference; records no track needs any more become
    /// garbage at once (in the accounting) and are reclaimed by GC.
    pub fn delete(&self, user: &UserId, key: &TrackKey) -> Result<()> {
        crate::write::delete::delete(&self.engine, user, key)
    }

    /// Opens a track for reading.
    pub fn open_track(&self, user: &UserId, key: &TrackKey) -> Result<TrackReader> {
        crate::read::open_track(&self.engine, user, key)
    }

    /// Reads a whole track into memory, verified.
    pub fn read_track(&self, user: &UserId, key: &TrackKey) -> Result<Vec<u8>> {
        crate::read::read_track(&self.engine, user, key)
    }

    /// Facts about one track.
    pub fn track_info(&self, user: &UserId, key: &TrackKey) -> Result<TrackInfo> {
        crate::read::catalog::track_info(&self.engine, user, key)
    }

    /// The user's tracks, by key.
    pub fn list(&self, user: &UserId) -> Result<Vec<TrackInfo>> {
        crate::read::catalog::list(&self.engine, user)
    }

    /// Store-wide and per-user accounting.
    pub fn stats(&self) -> Result<Stats> {
        crate::read::catalog::stats(&self.engine)
    }

    /// Frees garbage and compacts packs (see `docs/DESIGN.md`, GC): garbage entries no ingest
    /// has pinned leave the index, then packs whose live share is below the threshold are
    /// rewritten and deleted. Ingests and reads go on meanwhile.
    pub fn gc(
        &self,
        options: GcOptions,
        progress: &mut dyn FnMut(&GcProgress),
    ) -> Result<GcReport> {
        crate::maint::gc::gc(&self.engine, options, progress)
    }

    /// Predicts, from metadata alone, what migrating with the default mode `mode` (and the
    /// licence entries as they are) would do.
    pub fn what_if(&self, mode: LicenseMode) -> Result<WhatIf> {
        crate::maint::whatif::what_if(&self.engine, mode)
    }

    /// Predicts, from metadata alone and for every rights holder at once, what changing that
    /// holder's licence to the other mode and migrating would do: the physical bytes after,
    /// the bytes to write and to free, sorted by savings (docs/DESIGN.md 14.4).
    pub fn what_if_by_holder(&self) -> Result<HolderWhatIfs> {
        crate::maint::whatif::what_if_by_holder(&self.engine)
    }

    /// Audits the physical layout against the licence policy, for the store and per rights
    /// holder. With `records`, the report lists every live record with its domain and the
    /// users referencing it.
    pub fn audit(&self, records: bool) -> Result<AuditReport> {
        crate::maint::audit::audit(&self.engine, records)
    }

    /// Brings the physical layout in line with the licence policy, online: ingests, reads and
    /// deletes go on meanwhile, from any thread. Moves only the tracks whose holder's licence
    /// (or the default) wants them elsewhere. Crash-safe and resumable; a store already in
    /// line is left alone. Before copying data it checks the free disk space against the
    /// what-if figure and refuses with `InsufficientSpace`.
    pub fn migrate(&self, progress: &mut dyn FnMut(&MigrationProgress)) -> Result<MigrationReport> {
        crate::maint::migrate::migrate(&self.engine, progress)
    }

    /// Checks the whole store. Returns `Err` only when the check itself cannot run (the metadata
    /// cannot be read at all); damage is listed in the report.
    pub fn verify(&self) -> Result<VerifyReport> {
        crate::maint::verify::verify(&self.engine)
    }

    /// Removes the tracks damage has cost (the ones [`Store::verify`] lists in
    /// `damaged_tracks`) and keeps everything else, so the store verifies clean again:
    /// - each damaged track is unlinked as by [`Store::delete`], in one commit with the rest;
    /// - index entries of damaged chunk records that no track references any more are removed
    ///   (their bytes are garbage, reclaimed by GC like any other);
    /// - a pack shorter than its committed length gets a row that ends where the file ends
    ///   (sealed), or, when no entry points into it any more, loses its row and its file.
    ///
    /// Nothing that reads back exactly is dropped. A track replaced or deleted meanwhile is left
    /// alone. Re-reads every chunk and track, like `verify`.
    pub fn drop_damaged_tracks(&self) -> Result<DroppedDamage> {
        crate::maint::verify::drop_damaged_tracks(&self.engine)
    }

    /// Starts a proof of ownership for `user`'s track `key`. Looks nothing up: the challenge's
    /// shape and cost depend only on `claim.audio_len`, never on the store's content or mode.
    pub fn challenge(
        &self,
        user: &UserId,
        key: &TrackKey,
        claim: &OwnershipClaim,
    ) -> Result<Challenge> {
        self.proofs.challenge(user, key, claim)
    }

    /// Checks the answer to a challenge and, if it proves possession, stores `head ‖ payload ‖
    /// tail` as the user's track (the client's own bytes before and after the audio payload),
    /// the payload taken from the very record the answer was checked against.
    ///
    /// Every refusal is [`ProofOutcome::Refused`] and returns no earlier than
    /// [`crate::REFUSAL_FLOOR`] after the call. Anything that goes wrong on the holder's side
    /// (its track replaced, deleted or freed meanwhile, a damaged chunk) is a refusal too, never
    /// an error naming the holder. An `Err` comes only from the store itself (the put of the
    /// linked track: a full disk, an I/O error) and names neither the holder nor its key.
    pub fn prove(
        &self,
        challenge_id: u64,
        response: [u8; 32],
        head: &[u8],
        tail: &[u8],
    ) -> Result<ProofOutcome> {
        self.proofs.prove(
            &self.engine,
            &self.writer,
            challenge_id,
            response,
            head,
            tail,
        )
    }
}
