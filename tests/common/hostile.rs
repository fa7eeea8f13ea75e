//! Crafted uploads that once cost work in proportion to their structures rather than their bytes
//! (issue 10, item 6), shared by `tests/hostile.rs` and `tests/hostile_memory.rs`.

use lockerstore::fuzzing::{Container, crafted};

/// A crafted upload: its name and how to build it (built one at a time, they are tens of MB).
pub struct Case {
    pub name: &'static str,
    pub build: fn() -> Vec<u8>,
}

/// Each container twice: at tens of MB with far more regions than the segmenter's cap (the
/// report's MP4 and its equivalents), and at 30 MB with 4,000-odd regions, under the cap, where
/// the merge of tiny regions alone has to keep the chunk count down.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "mp4: 1,864,129 mdat boxes of 18 bytes (the report, 33.5 MB)",
            build: || crafted(Container::Mp4, 1_864_129, 10, false),
        },
        Case {
            name: "mp4: 1,000,000 mdat boxes with a free box between each two (26 MB)",
            build: || crafted(Container::Mp4, 1_000_000, 10, true),
        },
        Case {
            name: "mp3: 1,300,000 stacked ID3v2 tags with a 1-byte APIC each (32 MB)",
            build: || crafted(Container::Mp3, 1_300_000, 1, false),
        },
        Case {
            name: "flac: 900,000 PICTURE blocks of 1 byte (33 MB)",
            build: || crafted(Container::Flac, 900_000, 1, false),
        },
        Case {
            name: "ogg: a picture comment over 110,000 one-segment pages (31 MB)",
            build: || crafted(Container::Ogg, 110_000, 255, false),
        },
        Case {
            name: "mp4: 2,000 mdat boxes of 15 KB (30 MB, under the region cap)",
            build: || crafted(Container::Mp4, 2_000, 15_000, false),
        },
        Case {
            name: "mp3: 2,000 stacked ID3v2 tags with a 15 KB picture (30 MB, under the cap)",
            build: || crafted(Container::Mp3, 2_000, 15_000, false),
        },
        Case {
            name: "flac: 2,000 PICTURE blocks of 15 KB (30 MB, under the cap)",
            build: || crafted(Container::Flac, 2_000, 15_000, false),
        },
        Case {
            name: "ogg: a picture comment over 2,000 pages of 15 KB (30 MB, under the cap)",
            build: || crafted(Container::Ogg, 2_000, 15_000, false),
        },
    ]
}
