//! Where chunks are cut, derived from the regions: each region is cut on its own, except that a
//! region shorter than the minimum chunk may not stand alone beyond a small budget.
//!
//! Why: FastCDC emits at most one chunk shorter than `min` per range it cuts (the range's last),
//! so a range of `L` bytes gives at most `L / min + 1` chunks. Cutting `R` ranges of an upload of
//! `len` bytes thus gives at most `len / min + R` chunks. Ranges of at least `min` bytes number
//! at most `len / min`, so with at most [`MAX_SHORT_RANGES`] shorter ones the count is at most
//! `2 * len / min + MAX_SHORT_RANGES` whatever the regions were: the bound of
//! [`crate::chunk::max_chunks`].
//!
//! The rule, in file order: a region of at least `min` bytes starts a range of its own; a
//! shorter one also does while fewer than [`MAX_SHORT_RANGES`] short regions have started one,
//! otherwise it joins the range before it (the upload's first region always starts a range), so
//! a run of tiny regions becomes one range that FastCDC cuts as usual. Kinds play no part:
//! ranges only say where cuts may fall. The audio fingerprint and a track's audio ranges are
//! still taken from the regions, so the merge changes no fingerprint.
//!
//! An ordinary track has a handful of short regions (tags, small pictures, an ID3v1 trailer),
//! well within the budget, so every one of its region boundaries stays a cut point, exactly as
//! before the rule: retagged copies dedup as they did. A crafted upload of thousands of tiny
//! regions spends the budget on its first few; the rest merge into their neighbours.

use super::Region;

/// The most ranges shorter than the minimum chunk that [`cut_ranges`] keeps apart. Also the
/// additive term of the chunk bound `2 * len / min + 16`.
pub(crate) const MAX_SHORT_RANGES: usize = 16;

/// The byte ranges to cut, each on its own, for `regions` (a partition of the upload) and a
/// minimum chunk of `min` bytes: a partition of the same bytes into at most
/// `len / min + MAX_SHORT_RANGES` ranges, of which at most [`MAX_SHORT_RANGES`] are shorter
/// than `min`.
pub(crate) fn cut_ranges(regions: &[Region], min: u64) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    // Short regions that started a range: an upper bound on the short ranges, as ranges only grow.
    let mut short = 0usize;
    for r in regions {
        let range = (r.start as usize, r.end as usize);
        let is_short = r.end - r.start < min;
        match out.last_mut() {
            Some(last) if is_short && short >= MAX_SHORT_RANGES => last.1 = range.1,
            _ => {
                short += usize::from(is_short);
                out.push(range);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::RegionKind;
    use super::*;

    fn regions(lens: &[u64]) -> Vec<Region> {
        let mut at = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &l)| {
                let r = Region {
                    kind: if i % 2 == 0 {
                        RegionKind::Tag
                    } else {
                        RegionKind::Audio
                    },
                    start: at,
                    end: at + l,
                };
                at += l;
                r
            })
            .collect()
    }

    fn check(lens: &[u64], min: u64) -> Vec<(usize, usize)> {
        let len: u64 = lens.iter().sum();
        let out = cut_ranges(&regions(lens), min);
        let mut at = 0;
        for &(s, e) in &out {
            assert_eq!(s, at);
            assert!(e > s);
            at = e;
        }
        assert_eq!(at as u64, len);
        let short = out.iter().filter(|(s, e)| ((e - s) as u64) < min).count();
        assert!(short <= MAX_SHORT_RANGES, "{short} short ranges");
        assert!(out.len() as u64 <= len / min + MAX_SHORT_RANGES as u64);
        out
    }

    #[test]
    fn an_ordinary_track_keeps_every_boundary() {
        // ID3v2 tag, picture, padding, audio, APEv2, ID3v1.
        let lens = [2_000, 40_000, 1_000, 5_000_000, 300, 128];
        let out = check(&lens, 64 << 10);
        assert_eq!(out.len(), lens.len());
    }

    #[test]
    fn thousands_of_tiny_regions_merge_beyond_the_budget() {
        let lens = vec![18u64; 100_000];
        let out = check(&lens, 64 << 10);
        // The budget, then everything else joined to the last short range.
        assert_eq!(out.len(), MAX_SHORT_RANGES);
        let want: Vec<_> = (0..MAX_SHORT_RANGES - 1)
            .map(|i| (i * 18, i * 18 + 18))
            .collect();
        assert_eq!(out[..MAX_SHORT_RANGES - 1], want[..]);
    }

    #[test]
    fn tiny_regions_between_large_ones_join_them() {
        let lens: Vec<u64> = (0..2_000)
            .map(|i| if i % 2 == 0 { 70_000 } else { 10 })
            .collect();
        let out = check(&lens, 64 << 10);
        assert!(out.len() <= 1_000 + MAX_SHORT_RANGES);
        for lens in [vec![1u64; 5_000], vec![], vec![5], vec![65_536, 1, 65_536]] {
            check(&lens, 64 << 10);
        }
    }
}
