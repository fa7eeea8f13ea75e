//! Licences per rights holder on the command line: `license set|unset|list`, `holder`,
//! `what-if --by-holder`, and the per-holder part of `audit`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use lockerstore::{
    AuditReport, HolderWhatIfs, Licence, Licences, LicenseMode, RightsHolder, Store, TrackKey,
    UserId,
};
use serde_json::json;

use crate::{CliError, dates, mb};

#[derive(clap::Subcommand)]
pub(crate) enum LicenseAction {
    /// Give HOLDER's tracks a licence: `shared` (identical content stored once for all users)
    /// or `per-user` (every user keeps their own copy). New uploads follow it at once; `migrate`
    /// moves the tracks already stored.
    Set {
        holder: OsString,
        /// shared (single-master) or per-user (per-user-copy).
        mode: LicenseMode,
        /// The licence holds until DATE, then the holder's tracks follow the default again:
        /// YYYY-MM-DD (through that day, UTC) or an RFC 3339 timestamp
        /// (2027-01-31T12:00:00Z).
        #[arg(long, value_name = "DATE", value_parser = dates::parse_until)]
        until: Option<u64>,
    },
    /// Remove HOLDER's licence: its tracks follow the default (`lockerstore mode`) again.
    Unset { holder: OsString },
    /// The default and every holder's licence, with its end.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn holder_arg(s: &OsString) -> lockerstore::Result<RightsHolder> {
    RightsHolder::from_bytes(s.as_bytes())
}

/// Seconds since the Unix epoch, now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The word `license set` takes for a mode.
fn short(mode: LicenseMode) -> &'static str {
    match mode {
        LicenseMode::SingleMaster => "shared",
        _ => "per-user",
    }
}

fn licence_json(l: &Licence, at: u64) -> serde_json::Value {
    json!({
        "mode": l.mode.as_str(),
        "until": l.until,
        "until_utc": l.until.map(dates::format_utc),
        "expired": !l.in_force(at),
    })
}

pub(crate) fn license(store: &Store, action: &LicenseAction) -> Result<(), CliError> {
    match action {
        LicenseAction::Set {
            holder,
            mode,
            until,
        } => {
            let holder = holder_arg(holder)?;
            let mut licence = Licence::new(*mode);
            if let Some(u) = *until {
                if u <= now() {
                    return Err(CliError::Usage(format!(
                        "--until {} has already passed",
                        dates::format_utc(u)
                    )));
                }
                licence = licence.until(u);
            }
            store.set_licence(&holder, Some(licence))?;
            let end = until.map_or(String::new(), |u| {
                format!(" until {}", dates::format_utc(u))
            });
            outln!("{holder}: {}{end}", mode.as_str());
            outln!("(new uploads follow it now; `lockerstore migrate` moves the stored tracks)");
        }
        LicenseAction::Unset { holder } => {
            let holder = holder_arg(holder)?;
            if !store.licences().entries.contains_key(&holder) {
                return Err(CliError::Usage(format!(
                    "{holder:?} has no licence to unset"
                )));
            }
            store.set_licence(&holder, None)?;
            outln!(
                "{holder}: no licence; its tracks follow the default, {}",
                store.mode()
            );
        }
        LicenseAction::List { json } => print_licences(&store.licences(), now(), *json)?,
    }
    Ok(())
}

fn print_licences(l: &Licences, at: u64, json: bool) -> lockerstore::Result<()> {
    if json {
        let entries: Vec<_> = l
            .entries
            .iter()
            .map(|(h, e)| {
                let mut v = licence_json(e, at);
                v["holder"] = json!(h.as_str());
                v["mode_now"] = json!(l.mode_of(Some(h), at).as_str());
                v
            })
            .collect();
        outln!(
            "{}",
            json!({"default": l.default.as_str(), "entries": entries})
        );
        return Ok(());
    }
    let width = l
        .entries
        .keys()
        .map(|h| h.as_str().chars().count())
        .chain([9])
        .max()
        .unwrap_or(9)
        .min(40);
    outln!("{:<width$}  {}", "(default)", l.default);
    for (h, e) in &l.entries {
        let end = match e.until {
            None => "no end".to_string(),
            Some(u) if e.in_force(at) => format!("until {}", dates::format_utc(u)),
            Some(u) => format!(
                "ended {}: EXPIRED, its tracks follow the default",
                dates::format_utc(u)
            ),
        };
        outln!("{:<width$}  {:<13}  {end}", h.as_str(), e.mode.as_str());
    }
    Ok(())
}

/// `holder USER KEY [NAME | --none]`.
pub(crate) fn holder(
    store: &Store,
    user: &UserId,
    key: &TrackKey,
    set: Option<Option<RightsHolder>>,
    json: bool,
) -> Result<(), CliError> {
    if let Some(holder) = set {
        store.set_rights_holder(user, key, holder)?;
    }
    let info = store.track_info(user, key)?;
    let holder = info.rights_holder.as_ref();
    if json {
        outln!(
            "{}",
            json!({
                "user": user.as_str(),
                "key": key.as_str(),
                "rights_holder": holder.map(RightsHolder::as_str),
                "mode": store.licences().mode_of(holder, now()).as_str(),
            })
        );
    } else {
        outln!(
            "{}  ({})",
            holder.map_or("(unknown)", RightsHolder::as_str),
            store.licences().mode_of(holder, now())
        );
    }
    Ok(())
}

pub(crate) fn what_if_by_holder_json(w: &HolderWhatIfs) -> serde_json::Value {
    let at = now();
    let holders: Vec<_> = w
        .holders
        .iter()
        .map(|h| {
            json!({
                "holder": h.holder.as_str(),
                "licence": h.licence.as_ref().map(|l| licence_json(l, at)),
                "mode_now": h.mode_now.as_str(),
                "mode_after": h.mode_after.as_str(),
                "tracks": h.tracks,
                "logical_bytes": h.logical_bytes,
                "physical_bytes_now": h.physical_bytes_now,
                "physical_bytes_after": h.physical_bytes_after,
                "physical_bytes_baseline": h.physical_bytes_baseline,
                "bytes_to_write": h.bytes_to_write,
                "bytes_to_free": h.bytes_to_free,
                "savings": h.savings,
            })
        })
        .collect();
    json!({
        "baseline": crate::what_if_json(&w.baseline),
        "holders": holders,
        "unassigned_tracks": w.unassigned_tracks,
        "unassigned_bytes": w.unassigned_bytes,
    })
}

pub(crate) fn print_what_if_by_holder(w: &HolderWhatIfs) -> lockerstore::Result<()> {
    let at = now();
    let b = &w.baseline;
    outln!(
        "now: {:.1} MB physical; under the current licences, after migrating ({} tracks \
         pending): {:.1} MB",
        mb(b.physical_bytes_now),
        b.pending_tracks,
        mb(b.physical_bytes)
    );
    outln!("what each holder's licence flipped, then a migration, would do (MB):");
    let width = w
        .holders
        .iter()
        .map(|h| h.holder.as_str().chars().count())
        .chain([6])
        .max()
        .unwrap_or(6)
        .min(40);
    outln!(
        "{:<width$}  {:<9}  {:<8}  {:>7}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  {:>9}",
        "holder",
        "licence",
        "after",
        "tracks",
        "logical",
        "phys now",
        "phys after",
        "to write",
        "to free",
        "savings"
    );
    let mut defaulted = false;
    for h in &w.holders {
        let entry = h.licence.as_ref().filter(|l| l.in_force(at)).is_some();
        defaulted |= !entry;
        let now = format!("{}{}", short(h.mode_now), if entry { "" } else { "*" });
        outln!(
            "{:<width$}  {:<9}  {:<8}  {:>7}  {:>10.1}  {:>10.1}  {:>10.1}  {:>9.1}  {:>9.1}  {:>+9.1}",
            h.holder.as_str(),
            now,
            short(h.mode_after),
            h.tracks,
            mb(h.logical_bytes),
            mb(h.physical_bytes_now),
            mb(h.physical_bytes_after),
            mb(h.bytes_to_write),
            mb(h.bytes_to_free),
            h.savings as f64 / 1e6
        );
    }
    if defaulted {
        outln!("* no licence in force: the default, {}", b.mode);
    }
    outln!(
        "unassigned (no rights holder, follow the default): {} tracks, {:.1} MB",
        w.unassigned_tracks,
        mb(w.unassigned_bytes)
    );
    outln!("phys now: the records a holder's tracks reference; phys after: the whole store");
    Ok(())
}

pub(crate) fn audit_holders_json(a: &AuditReport) -> serde_json::Value {
    a.holders
        .iter()
        .map(|h| {
            json!({
                "holder": h.holder.as_ref().map(RightsHolder::as_str),
                "mode": h.mode.as_str(),
                "tracks": h.tracks,
                "pending_tracks": h.pending_tracks,
                "breaking_tracks": h.breaking_tracks,
                "conforming": h.conforming,
                "examples": h.examples.iter().map(|(u, k)| json!({"user": u, "key": k})).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub(crate) fn print_audit_holders(a: &AuditReport) -> lockerstore::Result<()> {
    if a.holders.is_empty() {
        return Ok(());
    }
    let name = |h: &lockerstore::HolderAudit| {
        h.holder
            .as_ref()
            .map_or("(unknown)".to_string(), |h| h.to_string())
    };
    let width = a
        .holders
        .iter()
        .map(|h| name(h).chars().count())
        .chain([6])
        .max()
        .unwrap_or(6)
        .min(40);
    outln!("per rights holder:");
    outln!(
        "  {:<width$}  {:<13}  {:>7}  {:>7}  {:>8}  verdict",
        "holder",
        "mode",
        "tracks",
        "pending",
        "breaking"
    );
    for h in &a.holders {
        outln!(
            "  {:<width$}  {:<13}  {:>7}  {:>7}  {:>8}  {}",
            name(h),
            h.mode.as_str(),
            h.tracks,
            h.pending_tracks,
            h.breaking_tracks,
            if h.conforming {
                "conforming"
            } else {
                "NOT CONFORMING"
            }
        );
        for (u, k) in &h.examples {
            outln!("      breaking: user {u:?} key {k:?}");
        }
        if h.breaking_tracks > h.examples.len() as u64 {
            outln!(
                "      ... and {} more",
                h.breaking_tracks - h.examples.len() as u64
            );
        }
    }
    Ok(())
}
