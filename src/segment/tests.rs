//! Tests of the segmenter: the reference fixtures against `tests/fixtures/truth.json`, the same
//! audio under generated tag sets, hostile inputs, and property tests of the partition invariant.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn truth() -> &'static Value {
    static TRUTH: OnceLock<Value> = OnceLock::new();
    TRUTH.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures_dir().join("truth.json")).expect("truth.json");
        serde_json::from_str(&text).expect("truth.json parses")
    })
}

fn truth_files() -> &'static [Value] {
    truth()["files"].as_array().expect("files list")
}

fn truth_of(name: &str) -> &'static Value {
    truth_files()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in truth.json"))
}

/// Every fixture, read once: (name, bytes).
fn fixtures() -> &'static [(String, Vec<u8>)] {
    static ALL: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        truth_files()
            .iter()
            .map(|f| {
                let name = f["name"].as_str().expect("name").to_string();
                let bytes = std::fs::read(fixtures_dir().join(&name)).expect("fixture file");
                (name, bytes)
            })
            .collect()
    })
}

fn fixture(name: &str) -> &'static [u8] {
    &fixtures()
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .1
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn audio_ranges(seg: &Segmentation) -> Vec<(u64, u64)> {
    seg.audio().map(|r| (r.start, r.end)).collect()
}

fn pictures<'a>(data: &'a [u8], seg: &Segmentation) -> Vec<&'a [u8]> {
    seg.regions
        .iter()
        .filter(|r| r.kind == RegionKind::Picture)
        .map(|r| &data[r.start as usize..r.end as usize])
        .collect()
}

/// The truth's audio fingerprint shared by the files of `encoding`.
fn encoding_blake3(encoding: &str) -> String {
    truth_files()
        .iter()
        .find(|f| f["encoding"] == encoding)
        .and_then(|f| f["audio_blake3"].as_str())
        .expect("encoding in truth.json")
        .to_string()
}

#[test]
fn fixtures_match_truth() {
    let mut failures = Vec::new();
    for f in truth_files() {
        let name = f["name"].as_str().expect("name");
        let data = fixture(name);
        assert_eq!(
            data.len() as u64,
            f["size"].as_u64().expect("size"),
            "{name}: size"
        );
        assert_eq!(
            hex(blake3::hash(data).as_bytes()),
            f["blake3"],
            "{name}: fixture copy differs"
        );
        let seg = segment(data);
        if let Err(e) = seg.check(data.len() as u64) {
            failures.push(format!("{name}: {e}"));
            continue;
        }
        let want: Vec<(u64, u64)> = f["audio"]
            .as_array()
            .expect("audio")
            .iter()
            .map(|r| (r[0].as_u64().expect("start"), r[1].as_u64().expect("end")))
            .collect();
        if audio_ranges(&seg) != want {
            failures.push(format!(
                "{name}: audio {:?}, truth {want:?}",
                audio_ranges(&seg)
            ));
        }
        let got = audio_fingerprint(data, &seg).map(|h| hex(&h));
        if got.as_deref() != f["audio_blake3"].as_str() {
            failures.push(format!(
                "{name}: audio_blake3 {got:?}, truth {}",
                f["audio_blake3"]
            ));
        }
        let format = match (f["format"].as_str(), f["codec"].as_str()) {
            (Some("mp3"), _) => Format::Mp3,
            (Some("flac"), _) => Format::Flac,
            (Some("mp4"), _) => Format::Mp4,
            (Some("ogg"), Some("opus")) => Format::OggOpus,
            (Some("ogg"), _) => Format::OggVorbis,
            other => panic!("{name}: unexpected format {other:?}"),
        };
        if seg.format != format {
            failures.push(format!(
                "{name}: format {:?}, expected {format:?}",
                seg.format
            ));
        }
        // Every non-audio region of the truth map lies in non-audio regions of ours (given the
        // audio ranges agree this follows, but it names the region when something is off).
        for r in f["regions"].as_array().expect("regions") {
            let (s, e) = (
                r["start"].as_u64().expect("start"),
                r["end"].as_u64().expect("end"),
            );
            let audio = r["kind"] == "audio";
            let mixed = seg
                .regions
                .iter()
                .any(|x| x.start < e && s < x.end && (x.kind == RegionKind::Audio) != audio);
            if mixed {
                failures.push(format!(
                    "{name}: truth region {r} crosses our audio boundary"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixture_pictures_are_cut_out() {
    let jpeg = {
        let data = fixture("mp3-cbr-id3v23-cover-eyed3.mp3");
        let seg = segment(data);
        let pics = pictures(data, &seg);
        assert_eq!(pics.len(), 1, "eyeD3 APIC");
        let p = pics[0];
        assert!(
            p.starts_with(&[0xff, 0xd8, 0xff]) && p.ends_with(&[0xff, 0xd9]),
            "a JPEG"
        );
        assert_eq!(p.len(), 3657);
        p.to_vec()
    };

    let data = fixture("flac-vorbiscomment-picture-padding-metaflac.flac");
    let seg = segment(data);
    let pics = pictures(data, &seg);
    assert_eq!(pics.len(), 1, "FLAC PICTURE");
    assert!(pics[0].starts_with(b"\x89PNG\r\n\x1a\n"));
    let png = seg
        .regions
        .iter()
        .find(|r| r.kind == RegionKind::Picture)
        .expect("picture");
    // The PICTURE block is [191, 1934): 4 + 52 bytes of header fields, then the image to its end.
    assert_eq!((png.start, png.end), (247, 1934));

    // The same cover as the MP3 one, in both MP4 layouts.
    for name in [
        "m4a-aac-moov-end-tags-cover-mutagen.m4a",
        "m4a-aac-moov-front-tags-cover-mdat-moved-mutagen.m4a",
    ] {
        let data = fixture(name);
        let seg = segment(data);
        assert_eq!(pictures(data, &seg), vec![&jpeg[..]], "{name}");
    }

    // Ogg: the base64 picture block spans two header pages; the pieces exclude the page header
    // between them and decode to a FLAC picture block holding the same JPEG.
    let data = fixture("ogg-vorbis-cover-repaginated-mutagen.ogg");
    let seg = segment(data);
    let pieces = pictures(data, &seg);
    assert_eq!(pieces.len(), 2, "{:?}", seg.regions);
    assert!(!pieces.iter().any(|p| p.windows(4).any(|w| w == b"OggS")));
    let b64: Vec<u8> = pieces.concat();
    assert_eq!(b64.len(), 4948);
    let block = base64_decode(&b64).expect("base64");
    assert_eq!(flac_picture_image(&block), Some(&jpeg[..]));

    // The retag added the same JPEG through mutagen.
    let data = fixture("mp3-cbr-retag-2-larger-tag-audio-moved-mutagen.mp3");
    assert_eq!(pictures(data, &segment(data)), vec![&jpeg[..]]);

    // Pictures exactly in the files whose tagging history adds one.
    for f in truth_files() {
        let name = f["name"].as_str().expect("name");
        let data = fixture(name);
        let n = pictures(data, &segment(data)).len();
        let with_cover = f["tagging"].as_array().expect("tagging").iter().any(|t| {
            let action = t["action"].as_str().unwrap_or("").to_ascii_lowercase();
            action.contains("apic") || action.contains("picture") || action.contains("covr")
        });
        assert_eq!(n > 0, with_cover, "{name}: {n} pictures");
    }
}

fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text: Vec<u8> = text.iter().copied().take_while(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for group in text.chunks(4) {
        let mut acc = 0u32;
        for &c in group {
            acc = (acc << 6) | val(c)?;
        }
        let bits = group.len() * 6;
        acc <<= 24 - bits;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + bits / 8]);
    }
    Some(out)
}

fn flac_picture_image(block: &[u8]) -> Option<&[u8]> {
    let be = |at: usize| -> Option<usize> { Some(be32(block, at)? as usize) };
    let mime = be(4)?;
    let desc = be(8 + mime)?;
    let fields = 12 + mime + desc;
    let len = be(fields + 16)?;
    block.get(fields + 20..fields + 20 + len)
}

#[test]
fn empty_and_unknown_inputs_fall_back() {
    let empty = segment(&[]);
    assert_eq!(empty.format, Format::Unknown);
    assert!(empty.regions.is_empty());
    assert_eq!(audio_fingerprint(&[], &empty), None);

    for data in [
        &b"hello, world"[..],
        &[0u8; 4096][..],
        b"RIFF\x10\0\0\0WAVEfmt ",
    ] {
        let seg = segment(data);
        assert_eq!(seg, fallback(data));
        assert_eq!(audio_fingerprint(data, &seg), None);
    }
    // A segmentation of another (longer) buffer never reads out of bounds.
    let long = fixture("flac-plain-flac.flac");
    let seg = segment(long);
    assert_eq!(audio_fingerprint(&long[..1000], &seg), None);
}

// ---------------------------------------------------------------------------------------------
// Tag writers for generated variants

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    crate::corpus::noise(seed, "segment test", n)
}

/// A JPEG-looking image of `n` bytes (SOI, noise, EOI).
fn jpeg(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0xff, 0xd8, 0xff, 0xe0];
    v.extend(noise(n - 6, seed));
    v.extend([0xff, 0xd9]);
    v
}

fn png(n: usize, seed: u64) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(noise(n - 8, seed));
    v
}

fn syncsafe_bytes(n: usize) -> [u8; 4] {
    assert!(n < 1 << 28);
    [
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]
}

struct Frame {
    id: &'static str,
    flags: u16,
    data: Vec<u8>,
    /// Write a 2.4 size as a plain 32-bit number (what iTunes does).
    plain_size: bool,
}

fn frame(id: &'static str, data: Vec<u8>) -> Frame {
    Frame {
        id,
        flags: 0,
        data,
        plain_size: false,
    }
}

fn text(id: &'static str, s: &str) -> Frame {
    let mut d = vec![0];
    d.extend_from_slice(s.as_bytes());
    frame(id, d)
}

/// APIC (2.3/2.4) frame data: encoding, MIME, picture type, description, image.
fn apic_data(encoding: u8, mime: &str, desc: &str, image: &[u8]) -> Vec<u8> {
    let mut d = vec![encoding];
    d.extend_from_slice(mime.as_bytes());
    d.extend([0, 3]);
    match encoding {
        1 => {
            d.extend([0xff, 0xfe]);
            for u in desc.encode_utf16() {
                d.extend(u.to_le_bytes());
            }
            d.extend([0, 0]);
        }
        2 => {
            for u in desc.encode_utf16() {
                d.extend(u.to_be_bytes());
            }
            d.extend([0, 0]);
        }
        _ => {
            d.extend_from_slice(desc.as_bytes());
            d.push(0);
        }
    }
    d.extend_from_slice(image);
    d
}

#[derive(Default)]
struct Id3Opts {
    padding: usize,
    footer: bool,
    extended: bool,
    unsync_flag: bool,
}

fn id3v2(major: u8, frames: &[Frame], o: &Id3Opts) -> Vec<u8> {
    let mut body = Vec::new();
    if o.extended {
        match major {
            3 => body.extend([0, 0, 0, 6, 0, 0, 0, 0, 0, 0]),
            _ => body.extend([0, 0, 0, 6, 1, 0]),
        }
    }
    for f in frames {
        body.extend_from_slice(f.id.as_bytes());
        let n = f.data.len();
        match major {
            2 => body.extend(&(n as u32).to_be_bytes()[1..]),
            3 => body.extend((n as u32).to_be_bytes()),
            _ if f.plain_size => body.extend((n as u32).to_be_bytes()),
            _ => body.extend(syncsafe_bytes(n)),
        }
        if major > 2 {
            body.extend(f.flags.to_be_bytes());
        }
        body.extend_from_slice(&f.data);
    }
    body.extend(std::iter::repeat_n(0, o.padding));
    let mut flags = 0;
    if o.unsync_flag {
        flags |= 0x80;
    }
    if o.extended {
        flags |= 0x40;
    }
    if o.footer {
        flags |= 0x10;
    }
    let mut tag = vec![b'I', b'D', b'3', major, 0, flags];
    tag.extend(syncsafe_bytes(body.len()));
    tag.extend_from_slice(&body);
    if o.footer {
        tag.extend([b'3', b'D', b'I', major, 0, flags]);
        tag.extend(syncsafe_bytes(body.len()));
    }
    tag
}

fn id3v1(title: &str) -> Vec<u8> {
    let mut t = b"TAG".to_vec();
    t.extend_from_slice(title.as_bytes());
    t.resize(128, 0);
    t[127] = 12;
    t
}

/// APEv2 (version 2000, with header) or APEv1 (1000, footer only); items are (key, binary, value).
fn ape(version: u32, items: &[(&str, bool, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, binary, value) in items {
        body.extend((value.len() as u32).to_le_bytes());
        body.extend((u32::from(*binary) << 1).to_le_bytes());
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value);
    }
    let header = version >= 2000;
    let block = |is_header: bool| {
        let mut b = b"APETAGEX".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(((body.len() + 32) as u32).to_le_bytes());
        b.extend((items.len() as u32).to_le_bytes());
        let mut flags = 0u32;
        if header {
            flags |= 1 << 31;
        }
        if is_header {
            flags |= 1 << 29;
        }
        b.extend(flags.to_le_bytes());
        b.extend([0; 8]);
        b
    };
    let mut out = Vec::new();
    if header {
        out.extend(block(true));
    }
    out.extend_from_slice(&body);
    out.extend(block(false));
    out
}

fn cover_item(image: &[u8]) -> Vec<u8> {
    let mut v = b"cover.jpg\0".to_vec();
    v.extend_from_slice(image);
    v
}

fn lyrics3v2(lyrics: &str) -> Vec<u8> {
    let mut t = b"LYRICSBEGIN".to_vec();
    t.extend_from_slice(b"IND00002");
    t.extend_from_slice(b"10");
    t.extend_from_slice(format!("LYR{:05}", lyrics.len()).as_bytes());
    t.extend_from_slice(lyrics.as_bytes());
    let size = t.len();
    t.extend_from_slice(format!("{size:06}LYRICS200").as_bytes());
    t
}

fn lyrics3v1(lyrics: &str) -> Vec<u8> {
    let mut t = b"LYRICSBEGIN".to_vec();
    t.extend_from_slice(lyrics.as_bytes());
    t.extend_from_slice(b"LYRICSEND");
    t
}

/// One generated file: bytes, where the audio is, which pictures it holds, in order.
struct Variant {
    what: &'static str,
    data: Vec<u8>,
    audio: Vec<(u64, u64)>,
    pictures: Vec<Vec<u8>>,
}

fn check_variant(v: &Variant, want_format: Format, want_blake3: &str) {
    let seg = segment(&v.data);
    seg.check(v.data.len() as u64)
        .unwrap_or_else(|e| panic!("{}: {e}", v.what));
    assert_eq!(seg.format, want_format, "{}: format", v.what);
    assert_eq!(
        audio_ranges(&seg),
        v.audio,
        "{}: audio ranges {:?}",
        v.what,
        seg.regions
    );
    let fp = audio_fingerprint(&v.data, &seg).map(|h| hex(&h));
    assert_eq!(
        fp.as_deref(),
        Some(want_blake3),
        "{}: audio fingerprint",
        v.what
    );
    let got = pictures(&v.data, &seg);
    let want: Vec<&[u8]> = v.pictures.iter().map(Vec::as_slice).collect();
    assert!(
        got == want,
        "{}: pictures {:?}, expected {:?}",
        v.what,
        got.iter().map(|p| p.len()).collect::<Vec<_>>(),
        want.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
}

/// `front` + audio + `back`, with the audio range.
fn around(
    what: &'static str,
    front: Vec<u8>,
    audio: &[u8],
    back: Vec<u8>,
    pics: Vec<Vec<u8>>,
) -> Variant {
    let start = front.len() as u64;
    let mut data = front;
    data.extend_from_slice(audio);
    data.extend_from_slice(&back);
    Variant {
        what,
        data,
        audio: vec![(start, start + audio.len() as u64)],
        pictures: pics,
    }
}

fn mp3_variants(audio: &[u8]) -> Vec<Variant> {
    let o = Id3Opts::default;
    let (c1, c2, c3, c4) = (jpeg(5000, 1), jpeg(100_000, 2), jpeg(3000, 3), png(700, 4));
    let mut v = vec![around("untagged", vec![], audio, vec![], vec![])];
    v.push(around(
        "2.3 text frames, no padding",
        id3v2(
            3,
            &[text("TIT2", "Chord Study"), text("TPE1", "Someone")],
            &o(),
        ),
        audio,
        vec![],
        vec![],
    ));
    v.push(around(
        "2.4 TIT2 + COMM, 1000 padding",
        id3v2(
            4,
            &[
                text("TIT2", "Étude"),
                frame("COMM", b"\x03eng\0a comment".to_vec()),
            ],
            &Id3Opts {
                padding: 1000,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![],
    ));
    v.push(around(
        "2.3 APIC 5000 UTF-16 description, 256 padding",
        id3v2(
            3,
            &[
                text("TALB", "Album"),
                frame("APIC", apic_data(1, "image/jpeg", "Cover (front)", &c1)),
                text("TIT2", "after the picture"),
            ],
            &Id3Opts {
                padding: 256,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![c1.clone()],
    ));
    v.push(around(
        "2.4 APIC 100 KB latin-1 description, footer",
        id3v2(
            4,
            &[frame("APIC", apic_data(0, "image/jpeg", "front", &c2))],
            &Id3Opts {
                footer: true,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![c2.clone()],
    ));
    v.push(around(
        "2.4 APIC UTF-16BE description, UTF-8 text",
        id3v2(
            4,
            &[
                frame("APIC", apic_data(2, "image/png", "b", &c4)),
                frame("TIT2", b"\x03utf-8 title".to_vec()),
            ],
            &Id3Opts { padding: 10, ..o() },
        ),
        audio,
        vec![],
        vec![c4.clone()],
    ));
    {
        let mut pic = vec![0];
        pic.extend_from_slice(b"JPG\x03desc\0");
        pic.extend_from_slice(&c3);
        let mut tt2 = vec![0];
        tt2.extend_from_slice(b"v2.2 title");
        v.push(around(
            "2.2 TT2 + PIC",
            id3v2(
                2,
                &[
                    Frame {
                        id: "TT2",
                        ..frame("", tt2)
                    },
                    Frame {
                        id: "PIC",
                        ..frame("", pic)
                    },
                ],
                &o(),
            ),
            audio,
            vec![],
            vec![c3.clone()],
        ));
    }
    v.push(around(
        "ID3v1 only",
        vec![],
        audio,
        id3v1("Chord Study"),
        vec![],
    ));
    v.push(around(
        "APEv2 with binary cover, then ID3v1",
        vec![],
        audio,
        [
            ape(
                2000,
                &[
                    ("Title", false, b"x".to_vec()),
                    ("Cover Art (Front)", true, cover_item(&c3)),
                ],
            ),
            id3v1("t"),
        ]
        .concat(),
        vec![c3.clone()],
    ));
    v.push(around(
        "ID3v1 then APEv1 (no header)",
        vec![],
        audio,
        [
            id3v1("t"),
            ape(1000, &[("Artist", false, b"someone".to_vec())]),
        ]
        .concat(),
        vec![],
    ));
    v.push(around(
        "2.3 front, Lyrics3v2 and ID3v1 back",
        id3v2(3, &[text("TIT2", "t")], &Id3Opts { padding: 64, ..o() }),
        audio,
        [lyrics3v2("[00:01]la la la"), id3v1("t")].concat(),
        vec![],
    ));
    v.push(around(
        "Lyrics3v1 and ID3v1 back",
        vec![],
        audio,
        [lyrics3v1("la la la"), id3v1("t")].concat(),
        vec![],
    ));
    v.push(around(
        "stacked 2.4 and 2.3 tags, APIC in the second",
        [
            id3v2(
                4,
                &[text("TIT2", "first")],
                &Id3Opts {
                    padding: 100,
                    ..o()
                },
            ),
            id3v2(
                3,
                &[frame("APIC", apic_data(0, "image/jpeg", "", &c1))],
                &o(),
            ),
        ]
        .concat(),
        audio,
        vec![],
        vec![c1.clone()],
    ));
    v.push(around(
        "2.4 extended header, APIC with grouping and data length indicator",
        id3v2(
            4,
            &[
                text("TIT2", "t"),
                Frame {
                    flags: 0x0041,
                    ..frame("APIC", {
                        let body = apic_data(3, "image/jpeg", "d", &c3);
                        let mut d = vec![7];
                        d.extend(syncsafe_bytes(body.len()));
                        d.extend(body);
                        d
                    })
                },
            ],
            &Id3Opts {
                extended: true,
                padding: 33,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![c3.clone()],
    ));
    v.push(around(
        "2.3 extended header, APIC with grouping",
        id3v2(
            3,
            &[Frame {
                flags: 0x0020,
                ..frame(
                    "APIC",
                    [vec![9], apic_data(0, "image/jpeg", "d", &c4)].concat(),
                )
            }],
            &Id3Opts {
                extended: true,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![c4.clone()],
    ));
    v.push(around(
        "2.4 with iTunes-style plain frame sizes",
        id3v2(
            4,
            &[
                Frame {
                    plain_size: true,
                    ..frame("TXXX", [vec![0], vec![b'x'; 300], vec![0, b'y']].concat())
                },
                Frame {
                    plain_size: true,
                    ..frame("APIC", apic_data(0, "image/jpeg", "", &c1))
                },
            ],
            &Id3Opts { padding: 20, ..o() },
        ),
        audio,
        vec![],
        vec![c1.clone()],
    ));
    v.push(around(
        "2.3 with compressed APIC: not cut",
        id3v2(
            3,
            &[Frame {
                flags: 0x0080,
                ..frame("APIC", noise(2000, 5))
            }],
            &o(),
        ),
        audio,
        vec![],
        vec![],
    ));
    v.push(around(
        "2.3 with tag-level unsynchronisation: not cut",
        id3v2(
            3,
            &[frame(
                "APIC",
                apic_data(0, "image/png", "", &noise(1000, 6)),
            )],
            &Id3Opts {
                unsync_flag: true,
                ..o()
            },
        ),
        audio,
        vec![],
        vec![],
    ));
    v.push(around(
        "APIC frame size past the tag: tag kept whole",
        {
            let mut t = id3v2(
                3,
                &[frame("APIC", apic_data(0, "image/jpeg", "", &c3))],
                &Id3Opts { padding: 40, ..o() },
            );
            t[14..18].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
            t
        },
        audio,
        vec![],
        vec![],
    ));
    v.push(around(
        "appended 2.4 tag with footer, then ID3v1",
        vec![],
        audio,
        [
            id3v2(
                4,
                &[frame("APIC", apic_data(0, "image/jpeg", "", &c4))],
                &Id3Opts {
                    footer: true,
                    ..o()
                },
            ),
            id3v1("t"),
        ]
        .concat(),
        vec![c4.clone()],
    ));
    v
}

#[test]
fn mp3_variants_keep_the_audio_fingerprint() {
    let cbr = fixture("mp3-cbr-untagged-lame.mp3");
    let want = encoding_blake3("rec1-lame-cbr128");
    let variants = mp3_variants(cbr);
    assert!(variants.len() >= 10);
    for v in &variants {
        check_variant(v, Format::Mp3, &want);
    }
    let vbr = fixture("mp3-vbr-untagged-lame.mp3");
    let want = encoding_blake3("rec1-lame-vbr-V4");
    for v in mp3_variants(vbr) {
        check_variant(&v, Format::Mp3, &want);
    }
    // Audio taken out of a tagged fixture under its truth range works the same way.
    let tagged = fixture("mp3-cbr-retag-2-larger-tag-audio-moved-mutagen.mp3");
    let audio = &tagged[15869..];
    for v in mp3_variants(audio).iter().take(4) {
        check_variant(v, Format::Mp3, &encoding_blake3("rec1-lame-cbr128"));
    }
}

#[test]
fn mp3_junk_after_the_tag_is_skipped() {
    let audio = fixture("mp3-cbr-untagged-lame.mp3");
    let front = [
        id3v2(3, &[text("TIT2", "t")], &Id3Opts::default()),
        vec![0; 700],
    ]
    .concat();
    let v = around(
        "zeros outside the declared tag size",
        front.clone(),
        audio,
        vec![],
        vec![],
    );
    let start = front.len() as u64;
    let seg = segment(&v.data);
    let other: Vec<_> = seg
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::Other)
        .collect();
    assert_eq!(other.len(), 1);
    assert_eq!((other[0].start, other[0].end), (start - 700, start));
    check_variant(&v, Format::Mp3, &encoding_blake3("rec1-lame-cbr128"));

    // A frame header followed, one frame length on, by a header of another MPEG version is not
    // a first frame: the search goes on to the real one.
    let mut fake = vec![0u8; 1000];
    fake[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x64]); // MPEG 1 layer III, 417 bytes
    fake[417..421].copy_from_slice(&[0xff, 0xf3, 0x90, 0x64]); // MPEG 2 layer III
    let front = [id3v2(3, &[text("TIT2", "t")], &Id3Opts::default()), fake].concat();
    let v = around(
        "a fake frame pair in the junk",
        front.clone(),
        audio,
        vec![],
        vec![],
    );
    let seg = segment(&v.data);
    let other: Vec<_> = seg
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::Other)
        .collect();
    assert_eq!(other.len(), 1, "{:?}", seg.regions);
    assert_eq!(
        (other[0].start, other[0].end),
        (front.len() as u64 - 1000, front.len() as u64)
    );
    check_variant(&v, Format::Mp3, &encoding_blake3("rec1-lame-cbr128"));

    // Without a leading tag the file has to start with a frame.
    let mut junk = vec![0; 10];
    junk.extend_from_slice(audio);
    assert_eq!(segment(&junk).format, Format::Unknown);
    // A tag followed by no MPEG frames at all is not MP3.
    let text_only = [
        id3v2(3, &[text("TIT2", "t")], &Id3Opts::default()),
        vec![b'x'; 5000],
    ]
    .concat();
    assert_eq!(segment(&text_only), fallback(&text_only));
}

// FLAC ----------------------------------------------------------------------------------------

/// (type, body) of each metadata block and the frames of a native FLAC file.
fn flac_parts(data: &[u8]) -> (Vec<(u8, Vec<u8>)>, &[u8]) {
    assert!(data.starts_with(b"fLaC"));
    let mut at = 4;
    let mut blocks = Vec::new();
    loop {
        let last = data[at] & 0x80 != 0;
        let len = be24(data, at + 1).expect("len") as usize;
        blocks.push((data[at] & 0x7f, data[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
        if last {
            return (blocks, &data[at..]);
        }
    }
}

fn flac_file(blocks: &[(u8, Vec<u8>)], frames: &[u8]) -> (Vec<u8>, usize) {
    let mut out = b"fLaC".to_vec();
    for (i, (kind, body)) in blocks.iter().enumerate() {
        let last = if i + 1 == blocks.len() { 0x80 } else { 0 };
        out.push(kind | last);
        out.extend(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(body);
    }
    let start = out.len();
    out.extend_from_slice(frames);
    (out, start)
}

fn flac_picture(image: &[u8], mime: &str, desc: &str) -> (u8, Vec<u8>) {
    let mut b = 3u32.to_be_bytes().to_vec();
    b.extend((mime.len() as u32).to_be_bytes());
    b.extend_from_slice(mime.as_bytes());
    b.extend((desc.len() as u32).to_be_bytes());
    b.extend_from_slice(desc.as_bytes());
    b.extend([0, 0, 0, 64, 0, 0, 0, 64, 0, 0, 0, 24, 0, 0, 0, 0]);
    b.extend((image.len() as u32).to_be_bytes());
    b.extend_from_slice(image);
    (6, b)
}

fn vorbis_comment(vendor: &str, comments: &[&str]) -> Vec<u8> {
    let mut b = (vendor.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(vendor.as_bytes());
    b.extend((comments.len() as u32).to_le_bytes());
    for c in comments {
        b.extend((c.len() as u32).to_le_bytes());
        b.extend_from_slice(c.as_bytes());
    }
    b
}

fn flac_variants(source: &[u8]) -> Vec<Variant> {
    let (blocks, frames) = flac_parts(source);
    let streaminfo = blocks[0].clone();
    assert_eq!(streaminfo.0, 0);
    let seektable = blocks
        .iter()
        .find(|b| b.0 == 3)
        .cloned()
        .expect("seektable");
    let vc = (
        4,
        vorbis_comment(
            "reference libFLAC 1.4.2",
            &["TITLE=Chord Study", "ARTIST=Someone"],
        ),
    );
    let padding = |n: usize| (1u8, vec![0; n]);
    let (p1, p2, p3) = (png(2000, 11), jpeg(3657, 12), jpeg(40_000, 13));
    let mut out = Vec::new();
    let mut add =
        |what, front: Vec<u8>, blocks: Vec<(u8, Vec<u8>)>, back: Vec<u8>, pics: Vec<Vec<u8>>| {
            let (file, start) = flac_file(&blocks, frames);
            let mut data = front.clone();
            data.extend_from_slice(&file);
            data.extend_from_slice(&back);
            let start = (front.len() + start) as u64;
            out.push(Variant {
                what,
                data,
                audio: vec![(start, start + frames.len() as u64)],
                pictures: pics,
            });
        };
    add(
        "STREAMINFO only",
        vec![],
        vec![streaminfo.clone()],
        vec![],
        vec![],
    );
    add(
        "comment, PICTURE, 4096 padding",
        vec![],
        vec![
            streaminfo.clone(),
            vc.clone(),
            flac_picture(&p1, "image/png", "front cover"),
            padding(4096),
        ],
        vec![],
        vec![p1.clone()],
    );
    add(
        "seektable, empty padding last",
        vec![],
        vec![streaminfo.clone(), seektable.clone(), padding(0)],
        vec![],
        vec![],
    );
    add(
        "two PICTUREs around a comment",
        vec![],
        vec![
            streaminfo.clone(),
            flac_picture(&p2, "image/jpeg", ""),
            vc.clone(),
            flac_picture(&p3, "image/jpeg", "back"),
        ],
        vec![],
        vec![p2.clone(), p3.clone()],
    );
    add(
        "ID3v2.3 with APIC in front, PICTURE inside",
        id3v2(
            3,
            &[frame("APIC", apic_data(0, "image/jpeg", "", &p2))],
            &Id3Opts {
                padding: 500,
                ..Default::default()
            },
        ),
        vec![streaminfo.clone(), flac_picture(&p1, "image/png", "")],
        vec![],
        vec![p2.clone(), p1.clone()],
    );
    add(
        "APPLICATION block and 100 KB padding",
        vec![],
        vec![
            streaminfo.clone(),
            (2, b"abcdsome application data".to_vec()),
            padding(100_000),
        ],
        vec![],
        vec![],
    );
    add(
        "APEv2 and ID3v1 appended",
        vec![],
        vec![streaminfo.clone(), vc.clone()],
        [ape(2000, &[("Title", false, b"t".to_vec())]), id3v1("t")].concat(),
        vec![],
    );
    add(
        "stacked ID3v2 tags in front",
        [
            id3v2(4, &[text("TIT2", "a")], &Id3Opts::default()),
            id3v2(
                3,
                &[text("TIT2", "b")],
                &Id3Opts {
                    padding: 7,
                    ..Default::default()
                },
            ),
        ]
        .concat(),
        vec![streaminfo.clone(), seektable.clone(), vc.clone()],
        vec![],
        vec![],
    );
    add(
        "PICTURE with a data length past its block: not cut",
        vec![],
        vec![streaminfo.clone(), {
            let (k, mut b) = flac_picture(&p1, "image/png", "");
            let at = b.len() - p1.len() - 4;
            b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            (k, b)
        }],
        vec![],
        vec![],
    );
    out
}

#[test]
fn flac_variants_keep_the_audio_fingerprint() {
    let want = encoding_blake3("rec2-flac-5");
    for source in [
        "flac-plain-flac.flac",
        "flac-vorbiscomment-picture-padding-metaflac.flac",
    ] {
        let variants = flac_variants(fixture(source));
        assert!(variants.len() >= 8);
        for v in &variants {
            check_variant(v, Format::Flac, &want);
        }
    }
    let prepended = fixture("flac-id3v23-prepended-id3v2tool.flac");
    for v in flac_variants(&prepended[963..]) {
        check_variant(&v, Format::Flac, &want);
    }
}

#[test]
fn flac_malformed_falls_back() {
    let data = fixture("flac-plain-flac.flac");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut huge = data.to_vec();
    huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    cases.push(("STREAMINFO length past the end", huge));
    let mut no_last = data.to_vec();
    no_last[64] &= 0x7f;
    cases.push(("no last-block flag: frames read as a block", no_last));
    let mut not_streaminfo = data.to_vec();
    not_streaminfo[4] = 1;
    cases.push(("first block not STREAMINFO", not_streaminfo));
    let mut early_last = data.to_vec();
    early_last[4] |= 0x80;
    cases.push((
        "last flag on STREAMINFO: SEEKTABLE read as frames",
        early_last,
    ));
    cases.push(("truncated in the metadata", data[..100].to_vec()));
    let mut id3_past_end = fixture("flac-id3v23-prepended-id3v2tool.flac").to_vec();
    id3_past_end[6..10].copy_from_slice(&[0x7f, 0x7f, 0x7f, 0x7f]);
    cases.push(("ID3v2 size past the end", id3_past_end));
    for (what, data) in cases {
        assert_eq!(segment(&data), fallback(&data), "{what}");
    }
    // Metadata only, no frames: a FLAC file with no audio.
    let meta_only = &data[..108];
    let seg = segment(meta_only);
    assert_eq!(seg.format, Format::Flac);
    assert_eq!(audio_fingerprint(meta_only, &seg), None);
}

// MP4 -----------------------------------------------------------------------------------------

fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

/// Top-level boxes of an MP4 file: (type, whole box bytes).
fn mp4_boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let size = be32(data, at).expect("size") as usize;
        assert!(size >= 8, "test fixtures use plain 32-bit sizes");
        out.push((
            data[at + 4..at + 8].try_into().expect("type"),
            &data[at..at + size],
        ));
        at += size;
    }
    out
}

/// `udta`/`meta`/`ilst`/`covr` holding one `data` atom per image.
fn udta_with_covers(images: &[Vec<u8>], iso_meta: bool) -> Vec<u8> {
    let mut covr = Vec::new();
    for img in images {
        covr.extend(mp4_box(
            b"data",
            &[&[0, 0, 0, 13, 0, 0, 0, 0][..], img].concat(),
        ));
    }
    let ilst = mp4_box(
        b"ilst",
        &[
            mp4_box(b"\xa9nam", &mp4_box(b"data", b"\0\0\0\x01\0\0\0\0title")),
            mp4_box(b"covr", &covr),
        ]
        .concat(),
    );
    let hdlr = mp4_box(b"hdlr", &[&[0u8; 8][..], b"mdirappl", &[0; 9]].concat());
    let meta_payload = [if iso_meta { vec![0; 4] } else { vec![] }, hdlr, ilst].concat();
    mp4_box(b"udta", &mp4_box(b"meta", &meta_payload))
}

/// The file with each `mdat` cut down to its first `keep` bytes.
fn shrink_mp4(data: &[u8], keep: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bytes) in mp4_boxes(data) {
        if &kind == b"mdat" {
            out.extend(mp4_box(b"mdat", &bytes[8..8 + keep]));
        } else {
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// `source_covers`: the covers already in the source's `moov`.
fn mp4_variants(source: &[u8], source_covers: &[Vec<u8>]) -> Vec<Variant> {
    let boxes = mp4_boxes(source);
    let find = |k: &[u8; 4]| boxes.iter().find(|b| &b.0 == k).expect("box").1;
    let (ftyp, moov, mdat) = (find(b"ftyp"), find(b"moov"), find(b"mdat"));
    let payload = &mdat[8..];
    let free = mp4_box(b"free", &[]);
    let (c1, c2) = (jpeg(3657, 21), png(9000, 22));
    let moov_with = |images: &[Vec<u8>], iso: bool| {
        mp4_box(
            b"moov",
            &[&moov[8..], &udta_with_covers(images, iso)[..]].concat(),
        )
    };

    let mut out = Vec::new();
    // Builds a file from parts; `Some(header)` marks the mdat payload's place.
    let mut add = |what, parts: Vec<Vec<u8>>, pics: Vec<Vec<u8>>| {
        let pics = [source_covers, &pics[..]].concat();
        let mut data = Vec::new();
        let mut audio = Vec::new();
        for p in parts {
            if p.is_empty() {
                // Marker: the payload goes here.
                let s = data.len() as u64;
                data.extend_from_slice(payload);
                audio.push((s, data.len() as u64));
            } else {
                data.extend(p);
            }
        }
        out.push(Variant {
            what,
            data,
            audio,
            pictures: pics,
        });
    };
    let mdat32 = [&((payload.len() + 8) as u32).to_be_bytes()[..], b"mdat"].concat();
    let mdat64 = [
        &1u32.to_be_bytes()[..],
        b"mdat",
        &((payload.len() + 16) as u64).to_be_bytes(),
    ]
    .concat();
    let mdat0 = [&0u32.to_be_bytes()[..], b"mdat"].concat();
    add(
        "moov at the end",
        vec![
            ftyp.to_vec(),
            free.clone(),
            mdat32.clone(),
            vec![],
            moov.to_vec(),
        ],
        vec![],
    );
    add(
        "moov in front",
        vec![
            ftyp.to_vec(),
            moov.to_vec(),
            free.clone(),
            mdat32.clone(),
            vec![],
        ],
        vec![],
    );
    add(
        "moov in front with a cover (ISO meta)",
        vec![
            ftyp.to_vec(),
            moov_with(std::slice::from_ref(&c1), true),
            mdat32.clone(),
            vec![],
        ],
        vec![c1.clone()],
    );
    add(
        "moov at the end with two covers (QuickTime meta)",
        vec![
            ftyp.to_vec(),
            mdat32.clone(),
            vec![],
            moov_with(&[c1.clone(), c2.clone()], false),
        ],
        vec![c1.clone(), c2.clone()],
    );
    add(
        "64-bit mdat",
        vec![ftyp.to_vec(), free.clone(), mdat64, vec![], moov.to_vec()],
        vec![],
    );
    add(
        "mdat of size 0 (to the end)",
        vec![ftyp.to_vec(), moov.to_vec(), mdat0, vec![]],
        vec![],
    );
    out.push({
        // The payload split over two mdat boxes hashes the same: the ranges concatenate.
        let (a, b) = payload.split_at(payload.len() / 3);
        let mut data = ftyp.to_vec();
        let s1 = data.len() as u64 + 8;
        data.extend(mp4_box(b"mdat", a));
        data.extend(mp4_box(b"free", b"between"));
        let s2 = data.len() as u64 + 8;
        data.extend(mp4_box(b"mdat", b));
        data.extend_from_slice(moov);
        Variant {
            what: "two mdat boxes",
            data,
            audio: vec![(s1, s1 + a.len() as u64), (s2, s2 + b.len() as u64)],
            pictures: source_covers.to_vec(),
        }
    });
    out
}

#[test]
fn mp4_variants_keep_the_audio_fingerprint() {
    let want = encoding_blake3("rec3-ffmpeg-aac-96k");
    // The cover mutagen wrote into the tagged source is eyeD3's JPEG (located by hand).
    let cover = fixture("mp3-cbr-id3v23-cover-eyed3.mp3")[37..37 + 3657].to_vec();
    for (source, covers) in [
        ("m4a-aac-moov-end-untagged-ffmpeg.m4a", vec![]),
        (
            "m4a-aac-moov-front-tags-cover-mdat-moved-mutagen.m4a",
            vec![cover],
        ),
    ] {
        let variants = mp4_variants(fixture(source), &covers);
        assert!(variants.len() >= 7);
        for v in &variants {
            check_variant(v, Format::Mp4, &want);
        }
    }
}

#[test]
fn mp4_hostile_sizes_fall_back() {
    let data = fixture("m4a-aac-moov-end-untagged-ffmpeg.m4a");
    let set = |at: usize, bytes: &[u8]| {
        let mut d = data.to_vec();
        d[at..at + bytes.len()].copy_from_slice(bytes);
        d
    };
    let cases = [
        ("mdat size past the end", set(36, &u32::MAX.to_be_bytes())),
        ("box size below its header", set(28, &4u32.to_be_bytes())),
        (
            "64-bit size of 0",
            set(
                36,
                &[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            "64-bit size of 8",
            set(
                36,
                &[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 8],
            ),
        ),
        (
            "64-bit size huge",
            set(
                36,
                &[
                    0, 0, 0, 1, b'm', b'd', b'a', b't', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff,
                ],
            ),
        ),
        ("unprintable box type", set(32, &[0, 1, 2, 3])),
        ("truncated in moov", data[..data.len() - 10].to_vec()),
        (
            "trailing bytes after the last box",
            [data, &b"junk"[..]].concat(),
        ),
    ];
    for (what, d) in cases {
        assert_eq!(segment(&d), fallback(&d), "{what}");
    }
    // Size 0 on the first box: one box to the end, no audio.
    let d = set(0, &0u32.to_be_bytes());
    let seg = segment(&d);
    assert_eq!(seg.format, Format::Mp4);
    assert_eq!(seg.regions.len(), 1);
    assert_eq!(audio_fingerprint(&d, &seg), None);
}

// Ogg -----------------------------------------------------------------------------------------

fn ogg_crc(page: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in page {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn ogg_page(flags: u8, granule: u64, serial: u32, seq: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
    let mut p = b"OggS\0".to_vec();
    p.push(flags);
    p.extend(granule.to_le_bytes());
    p.extend(serial.to_le_bytes());
    p.extend(seq.to_le_bytes());
    p.extend([0; 4]);
    p.push(lacing.len() as u8);
    p.extend_from_slice(lacing);
    p.extend_from_slice(body);
    let crc = ogg_crc(&p);
    p[22..26].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Header packets and the audio bytes (from the first audio page on) of an Ogg file.
fn ogg_parts(data: &[u8], headers: usize) -> (Vec<Vec<u8>>, u32, &[u8]) {
    let serial = le32(data, 14).expect("serial");
    let mut packets = Vec::new();
    let mut cur = Vec::new();
    let mut at = 0;
    while packets.len() < headers {
        let n = data[at + 26] as usize;
        let lacing = &data[at + 27..at + 27 + n];
        let mut off = at + 27 + n;
        for &v in lacing {
            cur.extend_from_slice(&data[off..off + v as usize]);
            off += v as usize;
            if v < 255 {
                packets.push(std::mem::take(&mut cur));
            }
        }
        at = off;
    }
    (packets, serial, &data[at..])
}

/// Lays the header packets out on pages: the first packet alone on the first page, the others
/// packed into pages of at most 255 segments (with `page_each`, each packet starts a fresh page);
/// returns the bytes and the page count.
fn ogg_headers(packets: &[Vec<u8>], serial: u32, page_each: bool) -> (Vec<u8>, u32) {
    let lacing_of = |p: &[u8]| {
        let mut l = vec![255u8; p.len() / 255];
        l.push((p.len() % 255) as u8);
        l
    };
    let mut out = ogg_page(0x02, 0, serial, 0, &lacing_of(&packets[0]), &packets[0]);
    let mut seq = 1;
    let (mut lacing, mut body) = (Vec::new(), Vec::new());
    let mut continued = false;
    let mut flush = |lacing: &mut Vec<u8>,
                     body: &mut Vec<u8>,
                     ends_packet: bool,
                     seq: &mut u32,
                     continued: &mut bool| {
        let granule = if ends_packet { 0 } else { u64::MAX };
        out.extend(ogg_page(
            if *continued { 1 } else { 0 },
            granule,
            serial,
            *seq,
            lacing,
            body,
        ));
        *seq += 1;
        *continued = !ends_packet;
        lacing.clear();
        body.clear();
    };
    for p in &packets[1..] {
        if page_each && !lacing.is_empty() {
            flush(&mut lacing, &mut body, true, &mut seq, &mut continued);
        }
        let mut rest: &[u8] = p;
        for (i, &v) in lacing_of(p).iter().enumerate() {
            lacing.push(v);
            body.extend_from_slice(&rest[..v as usize]);
            rest = &rest[v as usize..];
            if lacing.len() == 255 {
                let ends = i + 1 == lacing_of(p).len();
                flush(&mut lacing, &mut body, ends, &mut seq, &mut continued);
            }
        }
    }
    if !lacing.is_empty() {
        flush(&mut lacing, &mut body, true, &mut seq, &mut continued);
    }
    (out, seq)
}

fn comment_packet(magic: &[u8], vendor: &str, comments: &[String]) -> Vec<u8> {
    let refs: Vec<&str> = comments.iter().map(String::as_str).collect();
    let mut p = magic.to_vec();
    p.extend(vorbis_comment(vendor, &refs));
    if magic.starts_with(b"\x03vorbis") {
        p.push(1); // framing bit
    }
    p
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            s.push(if i <= c.len() {
                A[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    s
}

#[test]
fn ogg_variants_keep_the_audio_and_cut_pictures() {
    let cases = [
        (
            "ogg-vorbis-untagged-oggenc.ogg",
            3,
            &b"\x03vorbis"[..],
            Format::OggVorbis,
        ),
        (
            "ogg-vorbis-cover-repaginated-mutagen.ogg",
            3,
            b"\x03vorbis",
            Format::OggVorbis,
        ),
        ("opus-opusenc.opus", 2, b"OpusTags", Format::OggOpus),
    ];
    for (name, headers, magic, format) in cases {
        let source = fixture(name);
        let want = truth_of(name)["audio_blake3"].as_str().expect("blake3");
        let (mut packets, serial, audio) = ogg_parts(source, headers);
        for (what, cover_len, page_each) in [
            ("no cover", 0, false),
            ("no cover, each header packet on its own page", 0, true),
            ("small cover", 3000, false),
            (
                "small cover, each header packet on its own page",
                3000,
                true,
            ),
            ("cover over three pages", 120_000, false),
        ] {
            let cover = jpeg(cover_len.max(10), cover_len as u64);
            let mut comments = vec![
                "TITLE=Chord Study".to_string(),
                "ARTIST=Someone".to_string(),
            ];
            let mut expect = Vec::new();
            if cover_len > 0 {
                let (_, block) = flac_picture(&cover, "image/jpeg", "");
                let value = base64(&block);
                comments.push(format!("METADATA_BLOCK_PICTURE={value}"));
                expect.push(value.into_bytes());
            }
            packets[1] = comment_packet(magic, "vendor", &comments);
            let (head, _pages) = ogg_headers(&packets, serial, page_each);
            let mut data = head.clone();
            data.extend_from_slice(audio);
            let seg = segment(&data);
            seg.check(data.len() as u64).expect("partition");
            assert_eq!(seg.format, format, "{name}, {what}");
            assert_eq!(
                audio_ranges(&seg),
                vec![(head.len() as u64, data.len() as u64)],
                "{name}, {what}"
            );
            assert_eq!(
                audio_fingerprint(&data, &seg).map(|h| hex(&h)).as_deref(),
                Some(want),
                "{name}, {what}"
            );
            let pieces = pictures(&data, &seg);
            assert_eq!(
                pieces.concat(),
                expect.concat(),
                "{name}, {what}: picture bytes"
            );
            if cover_len > 100_000 {
                assert!(pieces.len() >= 3, "{name}, {what}: split at page headers");
            }
        }
    }
}

#[test]
fn ogg_malformed_falls_back() {
    let data = fixture("ogg-vorbis-untagged-oggenc.ogg");
    let mut not_first = data.to_vec();
    not_first[5] = 0;
    let mut bad_codec = data.to_vec();
    bad_codec[29] = b'x';
    let mut other_serial = data.to_vec();
    other_serial[58 + 14] ^= 1;
    let mut never_ends = data.to_vec();
    let n = usize::from(never_ends[58 + 26]);
    never_ends[58 + 27..58 + 27 + n].fill(255);
    for (what, d) in [
        ("first page without the first-page flag", not_first),
        ("unknown codec", bad_codec),
        ("a page of another stream among the headers", other_serial),
        ("header pages truncated", data[..3000].to_vec()),
        ("lacing values never end a packet", never_ends),
    ] {
        assert_eq!(segment(&d), fallback(&d), "{what}");
    }
    // Header pages only: Ogg without audio.
    let seg = segment(&data[..3356]);
    assert_eq!(seg.format, Format::OggVorbis);
    assert_eq!(audio_fingerprint(&data[..3356], &seg), None);
}

// ---------------------------------------------------------------------------------------------
// Robustness: truncation everywhere near structure, hostile sizes, property tests

#[test]
fn truncation_never_breaks_the_partition() {
    for f in truth_files() {
        let name = f["name"].as_str().expect("name");
        let data = fixture(name);
        let mut cuts: Vec<usize> = (0..data.len()).step_by(211).collect();
        for r in f["regions"].as_array().expect("regions") {
            for edge in [
                r["start"].as_u64().expect("start"),
                r["end"].as_u64().expect("end"),
            ] {
                let edge = edge as usize;
                cuts.extend(edge.saturating_sub(40)..(edge + 40).min(data.len()));
            }
        }
        for cut in cuts {
            fuzz_check(0, &data[..cut]);
            fuzz_check(0, &data[cut..]);
        }
    }
}

#[test]
fn mp3_hostile_tags_fall_back_or_stay_in_bounds() {
    let tagged = fixture("mp3-cbr-id3v23-apev2-id3v1-mutagen.mp3");
    let len = tagged.len();
    let mut ape_huge = tagged.to_vec();
    // APEv2 footer at len - 128 - 32: its size field.
    ape_huge[len - 160 + 12..len - 160 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(segment(&ape_huge), fallback(&ape_huge));
    let mut id3_past_end = tagged.to_vec();
    id3_past_end[6..10].copy_from_slice(&[0x7f; 4]);
    assert_eq!(segment(&id3_past_end), fallback(&id3_past_end));
    let mut not_syncsafe = tagged.to_vec();
    not_syncsafe[9] |= 0x80;
    assert_eq!(segment(&not_syncsafe), fallback(&not_syncsafe));
    let mut lyrics_huge = fixture("mp3-cbr-untagged-lame.mp3").to_vec();
    lyrics_huge.extend(b"999999LYRICS200");
    // Not a Lyrics3 tag (nothing fits), so the bytes stay payload.
    let seg = segment(&lyrics_huge);
    assert_eq!(seg.format, Format::Mp3);
    assert_eq!(audio_ranges(&seg), vec![(0, lyrics_huge.len() as u64)]);
}

/// Magic prefixes that steer random bytes into each parser.
const PREFIXES: [&[u8]; 7] = [
    b"",
    b"ID3\x03\x00\x00\x00\x00\x01\x00",
    b"ID3\x04\x00\x10\x00\x00\x00\x20APIC",
    b"fLaC\x00\x00\x00\x22",
    b"OggS\x00\x02",
    b"\x00\x00\x00\x10ftypM4A ",
    b"\xff\xfb\x90\x64",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte near the start (where headers live).
    FlipHead(usize, u8),
    /// XOR a byte near the end (trailing tags, moov).
    FlipTail(usize, u8),
    /// Overwrite 4 bytes with a size-like value.
    Size(usize, u32),
    /// Keep only a prefix (fraction of the length, in 1/65536).
    Truncate(u16),
    /// Drop a prefix.
    DropFront(u16),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let sizes = prop_oneof![
        Just(0u32),
        Just(1),
        Just(8),
        Just(16),
        Just(0x7fff_ffff),
        Just(u32::MAX),
        Just(0x7f7f_7f7f),
        any::<u32>(),
        0u32..200_000,
    ];
    prop_oneof![
        (0usize..8192, 1u8..=255).prop_map(|(a, x)| Mutation::FlipHead(a, x)),
        (0usize..1024, 1u8..=255).prop_map(|(a, x)| Mutation::FlipTail(a, x)),
        (0usize..8192, sizes).prop_map(|(a, v)| Mutation::Size(a, v)),
        any::<u16>().prop_map(Mutation::Truncate),
        (0u16..2048).prop_map(Mutation::DropFront),
        (0usize..8192, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    if len == 0 {
        return;
    }
    match m {
        Mutation::FlipHead(at, x) => data[at % len] ^= x,
        Mutation::FlipTail(at, x) => data[len - 1 - at % len] ^= x,
        Mutation::Size(at, v) => {
            let at = at % len;
            let end = (at + 4).min(len);
            data[at..end].copy_from_slice(&v.to_be_bytes()[..end - at]);
        }
        Mutation::Truncate(f) => data.truncate(len * usize::from(*f) / 65536),
        Mutation::DropFront(n) => {
            data.drain(..usize::from(*n).min(len));
        }
        Mutation::Insert(at, bytes) => {
            let at = at % (len + 1);
            data.splice(at..at, bytes.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_give_a_partition(
        prefix in 0usize..PREFIXES.len(),
        body in prop::collection::vec(any::<u8>(), 0..3000),
        parser in 0u8..5,
    ) {
        let data = [PREFIXES[prefix], &body[..]].concat();
        fuzz_check(parser, &data);
    }

    #[test]
    fn mutated_fixtures_give_a_partition(
        which in 0usize..64,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let all = fixtures();
        let mut data = all[which % all.len()].1.clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        for parser in 0..5 {
            fuzz_check(parser, &data);
        }
    }

    #[test]
    fn mutated_variants_give_a_partition(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        // Small generated files with many structures (pictures, APEv2, Lyrics3, stacked tags).
        static SMALL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        let small = SMALL.get_or_init(|| {
            let mp3 = &fixture("mp3-cbr-untagged-lame.mp3")[..1254];
            let flac = fixture("flac-plain-flac.flac");
            let flac = &flac[..2000];
            mp3_variants(mp3).into_iter().chain(flac_variants(flac)).map(|v| v.data).collect()
        });
        let mut data = small[which.index(small.len())].clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        for parser in 0..5 {
            fuzz_check(parser, &data);
        }
    }
}

/// Writes the fuzz seed corpora (`fuzz/corpus/segment_*`): each fixture shrunk to a few KiB of
/// payload with its tag structure kept, plus generated variants. Run with
/// `cargo test --lib segment::tests::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        assert_ne!(
            segment(data).format,
            Format::Unknown,
            "seed {name} is not recognised"
        );
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    let shrink = |f: &Value, data: &[u8], keep: usize| -> Vec<u8> {
        let audio = f["audio"][0].as_array().expect("range");
        let (s, e) = (
            audio[0].as_u64().expect("s") as usize,
            audio[1].as_u64().expect("e") as usize,
        );
        [&data[..s], &data[s..(s + keep).min(e)], &data[e..]].concat()
    };
    for f in truth_files() {
        let name = f["name"].as_str().expect("name");
        let data = fixture(name);
        let stem = name.rsplit_once('.').expect("ext").0;
        match f["format"].as_str() {
            // Three CBR frames (417/418 bytes each at 128 kbit/s).
            Some("mp3") => write("segment_mp3", stem, &shrink(f, data, 1254)),
            Some("flac") => write("segment_flac", stem, &shrink(f, data, 1024)),
            Some("ogg") => {
                let s = f["audio"][0][0].as_u64().expect("s") as usize;
                // Header pages and the first audio page.
                let first = page_at(data, s).map_or(data.len(), |p| p.end);
                write("segment_ogg", stem, &data[..first]);
            }
            Some("mp4") => write("segment_mp4", stem, &shrink_mp4(data, 512)),
            other => panic!("{other:?}"),
        }
    }
    let mp3 = &fixture("mp3-cbr-untagged-lame.mp3")[..1254];
    for (i, v) in mp3_variants(mp3).iter().enumerate() {
        if v.data.len() < 20_000 {
            write("segment_mp3", &format!("variant-{i:02}"), &v.data);
        }
    }
    let flac = &fixture("flac-plain-flac.flac")[..1132];
    for (i, v) in flac_variants(flac).iter().enumerate() {
        if v.data.len() < 20_000 {
            write("segment_flac", &format!("variant-{i:02}"), &v.data);
        }
    }
    let vorbis = fixture("ogg-vorbis-untagged-oggenc.ogg");
    let (mut packets, serial, audio) = ogg_parts(vorbis, 3);
    let first_audio_page = page_at(audio, 0).map_or(audio.len(), |p| p.end);
    let (_, block) = flac_picture(&jpeg(2000, 31), "image/jpeg", "");
    let comments = [
        format!("METADATA_BLOCK_PICTURE={}", base64(&block)),
        "TITLE=t".into(),
    ];
    packets[1] = comment_packet(b"\x03vorbis", "vendor", &comments);
    for page_each in [false, true] {
        let (mut data, _) = ogg_headers(&packets, serial, page_each);
        data.extend_from_slice(&audio[..first_audio_page]);
        write(
            "segment_ogg",
            &format!("variant-cover-page-each-{page_each}"),
            &data,
        );
    }
    let mp4 = shrink_mp4(fixture("m4a-aac-moov-front-untagged-ffmpeg.m4a"), 512);
    for (i, v) in mp4_variants(&mp4, &[]).iter().enumerate() {
        write("segment_mp4", &format!("variant-{i:02}"), &v.data);
    }
}

use super::ogg::page_at;
