//! What an upload's tags say about its rights holder (the record label), read with `lofty`
//! (feature `tags`, on by default).
//!
//! Precedence (docs/DESIGN.md 14.1), first match wins:
//! 1. MP4: the freeform atom `----:com.apple.iTunes:LABEL`, then `©pub`, then the freeform
//!    `----:com.apple.iTunes:PUBLISHER`;
//! 2. every format: in the format's primary tag (ID3v2 for MP3, Vorbis comments for FLAC and
//!    Ogg, `ilst` for MP4) the label (ID3v2 `TPUB`, Vorbis `LABEL` or `ORGANIZATION`, APE
//!    `Label`), then the publisher (Vorbis `PUBLISHER`); then the same in the file's other tags
//!    (APEv2, ID3v1 has neither).
//!
//! The text is cleaned into a [`RightsHolder`] (`RightsHolder::from_tag`): control characters
//! dropped, whitespace runs made one space, trimmed, cut to 128 bytes. A tag that cannot be read
//! (malformed, truncated, an unknown format) names no holder: the track's holder is then unknown,
//! never an error, since the bytes are the user's own to store whatever their tags hold.
//!
//! Bounded work: only the bytes the put already holds are read (the segmenter's window: the
//! whole of every ordinary track; the leading part of a larger upload), with audio properties
//! and cover art skipped; lofty caps each allocation (16 MiB by default).

use crate::names::RightsHolder;

/// The rights holder `upload`'s tags name, if any. `upload` may be the leading part of a file.
/// A panic in the tag reader (a crafted tag it does not survive) names no holder, like any
/// other tag it cannot read: the upload is stored all the same.
#[cfg(feature = "tags")]
pub(crate) fn rights_holder(upload: &[u8]) -> Option<RightsHolder> {
    std::panic::catch_unwind(|| read_holder(upload))
        .ok()
        .flatten()
}

#[cfg(feature = "tags")]
fn read_holder(upload: &[u8]) -> Option<RightsHolder> {
    use std::io::Cursor;

    use lofty::config::ParseOptions;
    use lofty::file::{AudioFile, FileType, TaggedFileExt};
    use lofty::mp4::{AtomIdent, Mp4File};
    use lofty::probe::Probe;
    use lofty::tag::ItemKey;

    if upload.is_empty() {
        return None;
    }
    let options = ParseOptions::new()
        .read_properties(false)
        .read_cover_art(false);
    let probe = Probe::new(Cursor::new(upload))
        .options(options)
        .guess_file_type()
        .ok()?;
    if probe.file_type() == Some(FileType::Mp4) {
        let file = Mp4File::read_from(&mut Cursor::new(upload), options).ok()?;
        let ilst = file.ilst()?;
        let freeform = |name: &'static str| AtomIdent::Freeform {
            mean: "com.apple.iTunes".into(),
            name: name.into(),
        };
        for ident in [
            freeform("LABEL"),
            AtomIdent::Fourcc(*b"\xa9pub"),
            freeform("PUBLISHER"),
        ] {
            let text = ilst.get(&ident).and_then(|atom| {
                atom.data().find_map(|d| match d {
                    lofty::mp4::AtomData::UTF8(s) | lofty::mp4::AtomData::UTF16(s) => {
                        RightsHolder::from_tag(s)
                    }
                    _ => None,
                })
            });
            if text.is_some() {
                return text;
            }
        }
    }
    let file = probe.read().ok()?;
    let primary = file.primary_tag_type();
    let tags = file
        .tags()
        .iter()
        .filter(|t| t.tag_type() == primary)
        .chain(file.tags().iter().filter(|t| t.tag_type() != primary));
    for tag in tags {
        for key in [ItemKey::Label, ItemKey::Publisher] {
            if let Some(h) = tag.get_strings(key).find_map(RightsHolder::from_tag) {
                return Some(h);
            }
        }
    }
    None
}

/// Without the feature `tags`, tags name no holder.
#[cfg(not(feature = "tags"))]
pub(crate) fn rights_holder(_upload: &[u8]) -> Option<RightsHolder> {
    None
}
