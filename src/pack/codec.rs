//! Compress-or-keep-raw: audio does not shrink, tags and text do. A cheap entropy probe on a
//! sample decides whether zstd is worth trying; a compressed chunk is kept only when it is at most
//! 97 % of the plain size (borg's rule), so a chunk never grows.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::format::Codec;
use crate::ids::PackId;

/// Bytes sampled by the probe (four windows spread over the chunk).
const PROBE_WINDOW: usize = 1024;
/// Shannon entropy, in bits per byte, above which a sample counts as incompressible. Compressed
/// audio samples measure 7.8-7.95 on 4 KiB; text and tag frames well below 6.
const ENTROPY_LIMIT: f64 = 7.5;

/// Estimates the sample entropy of `data` in bits per byte.
pub(crate) fn sample_entropy(data: &[u8]) -> f64 {
    let mut hist = [0u32; 256];
    let mut n = 0u32;
    if data.len() <= 4 * PROBE_WINDOW {
        for &b in data {
            hist[b as usize] += 1;
        }
        n = data.len() as u32;
    } else {
        let step = (data.len() - PROBE_WINDOW) / 3;
        for w in 0..4 {
            for &b in &data[w * step..w * step + PROBE_WINDOW] {
                hist[b as usize] += 1;
            }
            n += PROBE_WINDOW as u32;
        }
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Chooses how to store `plain`: zstd at `level` when the probe says it may shrink and it does
/// shrink to at most 97 %, raw otherwise.
pub(crate) fn encode(plain: &[u8], level: i32) -> (Codec, Cow<'_, [u8]>) {
    if plain.len() < 64 || sample_entropy(plain) > ENTROPY_LIMIT {
        return (Codec::Raw, Cow::Borrowed(plain));
    }
    match zstd::bulk::compress(plain, level) {
        Ok(c) if c.len() * 100 <= plain.len() * 97 => (Codec::Zstd, Cow::Owned(c)),
        _ => (Codec::Raw, Cow::Borrowed(plain)),
    }
}

/// Decodes stored bytes back to `plain_len` plain bytes.
pub(crate) fn decode<'a>(
    codec: Codec,
    stored: &'a [u8],
    plain_len: u32,
    pack: PackId,
    offset: u64,
) -> Result<Cow<'a, [u8]>> {
    match codec {
        Codec::Raw => Ok(Cow::Borrowed(stored)),
        Codec::Zstd => {
            let out = zstd::bulk::decompress(stored, plain_len as usize).map_err(|e| {
                Error::corrupted_at(format!("zstd payload does not decode: {e}"), pack, offset)
            })?;
            if out.len() != plain_len as usize {
                return Err(Error::corrupted_at(
                    "zstd payload decodes to the wrong length",
                    pack,
                    offset,
                ));
            }
            Ok(Cow::Owned(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_noise_is_kept_raw() {
        let text = "TIT2 Some Song Title TPE1 Some Artist ".repeat(500);
        let (codec, stored) = encode(text.as_bytes(), 3);
        assert_eq!(codec, Codec::Zstd);
        assert!(stored.len() < text.len() / 4);
        let back = decode(codec, &stored, text.len() as u32, PackId(0), 0).unwrap();
        assert_eq!(&back[..], text.as_bytes());

        let noise: Vec<u8> = blake3::Hasher::new()
            .finalize_xof()
            .fill_and_return(64 << 10);
        assert!(sample_entropy(&noise) > ENTROPY_LIMIT);
        assert_eq!(encode(&noise, 3).0, Codec::Raw);
    }

    #[test]
    fn garbage_zstd_is_corruption() {
        let err = decode(Codec::Zstd, b"not zstd at all", 100, PackId(4), 99).unwrap_err();
        assert!(err.is_corruption());
    }

    trait Fill {
        fn fill_and_return(self, n: usize) -> Vec<u8>;
    }
    impl Fill for blake3::OutputReader {
        fn fill_and_return(mut self, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            self.fill(&mut v);
            v
        }
    }
}
