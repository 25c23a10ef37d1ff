//! Key ranges: the slice of the 64-bit keyspace-id space that one shard owns, written the Vitess
//! way as hex shard names (`-80`, `80-c0`, `c0-`, `-` for everything), and the check that a
//! keyspace's shards cover the whole space exactly once.
//!
//! A bound's hex digits are the high-order bytes of the 64-bit id: `40` is `0x40 << 56`, `4080`
//! is `0x4080 << 48`, up to 16 digits. Bounds are whole bytes (an even number of digits), as in
//! Vitess; upper- and lower-case digits are accepted and the canonical name is lower-case with
//! trailing zero bytes dropped (`80-C000` is `80-c0`, and a start of `00` is written empty).

use std::cmp::Ordering;
use std::fmt;

/// One past the largest keyspace id, as the exclusive end of the last range.
const SPACE_END: u128 = 1 << 64;

/// Why a shard name is not a key range.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyRangeError {
    #[error(
        "`{0}` is not a key range: expected `start-end` in hex, such as `-80`, `80-c0` or `c0-`"
    )]
    NoDash(String),
    #[error("`{name}`: bound `{bound}` is not hex digits")]
    NotHex { name: String, bound: String },
    #[error("`{name}`: bound `{bound}` must be whole bytes (an even number of hex digits)")]
    OddDigits { name: String, bound: String },
    #[error("`{name}`: bound `{bound}` has more than 16 hex digits")]
    TooLong { name: String, bound: String },
    #[error("`{name}` is empty: its end is not after its start")]
    Empty { name: String },
    #[error("cannot split the key space into {0} ranges: choose between 1 and 65536")]
    BadSplit(usize),
}

/// A half-open range `[start, end)` of keyspace ids; `end: None` runs to the end of the space
/// (so it includes `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRange {
    pub start: u64,
    /// Exclusive; `None` means "to the end of the space".
    pub end: Option<u64>,
}

impl KeyRange {
    /// The whole space, shard name `-`.
    pub const FULL: KeyRange = KeyRange {
        start: 0,
        end: None,
    };

    /// Parses a Vitess-style shard name. Empty ranges (end not after start) are refused.
    pub fn parse(name: &str) -> Result<KeyRange, KeyRangeError> {
        let Some((lo, hi)) = name.split_once('-') else {
            return Err(KeyRangeError::NoDash(name.to_string()));
        };
        let start = parse_bound(name, lo)?.unwrap_or(0);
        let end = parse_bound(name, hi)?;
        let range = KeyRange { start, end };
        if range.end_u128() <= u128::from(start) {
            return Err(KeyRangeError::Empty {
                name: name.to_string(),
            });
        }
        Ok(range)
    }

    /// The canonical shard name: lower-case hex, trailing zero bytes dropped, open ends empty.
    pub fn name(&self) -> String {
        let start = if self.start == 0 {
            String::new()
        } else {
            bound_hex(self.start)
        };
        let end = self.end.map(bound_hex).unwrap_or_default();
        format!("{start}-{end}")
    }

    /// Hex of the start bound with `00` for the start of the space (database names use this).
    pub fn start_hex(&self) -> String {
        if self.start == 0 {
            "00".into()
        } else {
            bound_hex(self.start)
        }
    }

    /// Hex of the end bound with `ff` for the end of the space (database names use this).
    pub fn end_hex(&self) -> String {
        self.end.map(bound_hex).unwrap_or_else(|| "ff".into())
    }

    /// The exclusive end as a 65-bit number, so that the open end compares above every id.
    pub fn end_u128(&self) -> u128 {
        self.end.map_or(SPACE_END, u128::from)
    }

    /// Whether `id` falls in this range.
    pub fn contains(&self, id: u64) -> bool {
        self.start <= id && u128::from(id) < self.end_u128()
    }

    /// Whether the two ranges share at least one id.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        u128::from(self.start) < other.end_u128() && u128::from(other.start) < self.end_u128()
    }

    /// Splits the whole space into `k` contiguous ranges (`1 <= k <= 65536`), in order.
    ///
    /// When `k` is a power of two the ranges are exactly equal (`k = 4`: `-40`, `40-80`,
    /// `80-c0`, `c0-`). Otherwise bound `i` is `i * 2^64 / k` rounded down to a multiple of
    /// `2^48`, so that names stay at most two bytes (`k = 3`: `-5555`, `5555-aaaa`, `aaaa-`);
    /// the sizes then differ by less than one part in 65536 of the space.
    pub fn split_even(k: usize) -> Result<Vec<KeyRange>, KeyRangeError> {
        if k == 0 || k > 1 << 16 {
            return Err(KeyRangeError::BadSplit(k));
        }
        let k128 = k as u128;
        let bound = |i: u128| -> u64 {
            let exact = (i * SPACE_END / k128) as u64;
            if k.is_power_of_two() {
                exact
            } else {
                exact & !((1u64 << 48) - 1)
            }
        };
        Ok((0..k128)
            .map(|i| KeyRange {
                start: bound(i),
                end: (i + 1 < k128).then(|| bound(i + 1)),
            })
            .collect())
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Ordered by start, then by end with the open end last.
impl Ord for KeyRange {
    fn cmp(&self, other: &Self) -> Ordering {
        self.start
            .cmp(&other.start)
            .then_with(|| self.end_u128().cmp(&other.end_u128()))
    }
}

impl PartialOrd for KeyRange {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::str::FromStr for KeyRange {
    type Err = KeyRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyRange::parse(s)
    }
}

/// Serialised as its canonical shard name.
impl serde::Serialize for KeyRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for KeyRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        KeyRange::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// `None` for an empty bound (an open end).
fn parse_bound(name: &str, bound: &str) -> Result<Option<u64>, KeyRangeError> {
    if bound.is_empty() {
        return Ok(None);
    }
    let err_bound = || bound.to_string();
    if !bound.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyRangeError::NotHex {
            name: name.into(),
            bound: err_bound(),
        });
    }
    if bound.len() > 16 {
        return Err(KeyRangeError::TooLong {
            name: name.into(),
            bound: err_bound(),
        });
    }
    if bound.len() % 2 == 1 {
        return Err(KeyRangeError::OddDigits {
            name: name.into(),
            bound: err_bound(),
        });
    }
    let digits = u64::from_str_radix(bound, 16).expect("checked: 1..=16 hex digits");
    Ok(Some(digits << (64 - 4 * bound.len())))
}

/// Lower-case hex of the bound's bytes with trailing zero bytes dropped (at least one byte).
fn bound_hex(v: u64) -> String {
    let full = format!("{v:016x}");
    let mut s = full.as_str();
    while s.len() > 2 && s.ends_with("00") {
        s = &s[..s.len() - 2];
    }
    s.to_string()
}

/// A problem with how a keyspace's shards cover the space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoverageProblem {
    /// No shard covers this range.
    Gap(KeyRange),
    /// These two shards (canonical names) share ids.
    Overlap(String, String),
}

/// Checks that `ranges` cover the whole space with no gap and no overlap. Reports every gap and
/// at least one overlapping pair for every overlap.
pub fn check_coverage(ranges: &[KeyRange]) -> Vec<CoverageProblem> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut problems = Vec::new();
    // `covered` is the end of everything seen so far; `owner` the range that reaches it.
    let mut covered: u128 = 0;
    let mut owner: Option<KeyRange> = None;
    for r in sorted {
        let start = u128::from(r.start);
        if start > covered {
            problems.push(CoverageProblem::Gap(KeyRange {
                start: covered as u64,
                end: Some(r.start),
            }));
        } else if start < covered {
            if let Some(o) = owner {
                problems.push(CoverageProblem::Overlap(o.name(), r.name()));
            }
        }
        if r.end_u128() > covered {
            covered = r.end_u128();
            owner = Some(r);
        }
    }
    if covered < SPACE_END {
        problems.push(CoverageProblem::Gap(KeyRange {
            start: covered as u64,
            end: None,
        }));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_into_ranges_and_back() {
        let cases: &[(&str, u64, Option<u64>, &str)] = &[
            ("-", 0, None, "-"),
            ("-80", 0, Some(0x80 << 56), "-80"),
            ("80-", 0x80 << 56, None, "80-"),
            ("80-c0", 0x80 << 56, Some(0xc0 << 56), "80-c0"),
            ("80-C0", 0x80 << 56, Some(0xc0 << 56), "80-c0"),
            ("40-4080", 0x40 << 56, Some(0x4080 << 48), "40-4080"),
            ("00-40", 0, Some(0x40 << 56), "-40"),
            ("4000-8000", 0x40 << 56, Some(0x80 << 56), "40-80"),
            ("-0000000000000001", 0, Some(1), "-0000000000000001"),
            (
                "fffffffffffffffe-FFFFFFFFFFFFFFFF",
                u64::MAX - 1,
                Some(u64::MAX),
                "fffffffffffffffe-ffffffffffffffff",
            ),
            ("ff-", 0xff << 56, None, "ff-"),
        ];
        for &(name, start, end, canonical) in cases {
            let r = KeyRange::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((r.start, r.end), (start, end), "{name}");
            assert_eq!(r.name(), canonical, "{name}");
            assert_eq!(KeyRange::parse(&r.name()).unwrap(), r, "{name} round trip");
        }
    }

    #[test]
    fn refuses_bad_names() {
        let cases: &[(&str, &str)] = &[
            ("80", "not a key range"),
            ("", "not a key range"),
            ("-8", "even number"),
            ("abc-", "even number"),
            ("-8g", "not hex"),
            ("- 80", "not hex"),
            ("+80-", "not hex"),
            ("-80-c0", "not hex"),
            ("-00112233445566778899", "more than 16"),
            ("80-40", "empty"),
            ("80-80", "empty"),
            ("-00", "empty"),
        ];
        for &(name, want) in cases {
            let err = KeyRange::parse(name).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn contains_and_intersects_respect_open_and_exclusive_ends() {
        let low = KeyRange::parse("-80").unwrap();
        let high = KeyRange::parse("80-").unwrap();
        let mid = KeyRange::parse("40-c0").unwrap();
        assert!(low.contains(0) && low.contains((0x80 << 56) - 1));
        assert!(!low.contains(0x80 << 56));
        assert!(high.contains(0x80 << 56) && high.contains(u64::MAX));
        assert!(KeyRange::FULL.contains(u64::MAX) && KeyRange::FULL.contains(0));
        assert!(!low.intersects(&high) && !high.intersects(&low));
        assert!(mid.intersects(&low) && mid.intersects(&high));
        assert!(KeyRange::FULL.intersects(&high));
    }

    #[test]
    fn orders_by_start_then_end_with_open_end_last() {
        let mut v: Vec<KeyRange> = ["80-", "-", "-80", "40-80", "-40"]
            .iter()
            .map(|n| KeyRange::parse(n).unwrap())
            .collect();
        v.sort();
        let names: Vec<String> = v.iter().map(KeyRange::name).collect();
        assert_eq!(names, ["-40", "-80", "-", "40-80", "80-"]);
    }

    #[test]
    fn split_even_names_and_covers() {
        let cases: &[(usize, &[&str])] = &[
            (1, &["-"]),
            (2, &["-80", "80-"]),
            (4, &["-40", "40-80", "80-c0", "c0-"]),
            (3, &["-5555", "5555-aaaa", "aaaa-"]),
            (
                5,
                &["-3333", "3333-6666", "6666-9999", "9999-cccc", "cccc-"],
            ),
        ];
        for &(k, want) in cases {
            let ranges = KeyRange::split_even(k).unwrap();
            let names: Vec<String> = ranges.iter().map(KeyRange::name).collect();
            assert_eq!(names, want, "k = {k}");
            assert!(check_coverage(&ranges).is_empty(), "k = {k}");
        }
        for k in [16, 256, 1000, 65536] {
            let ranges = KeyRange::split_even(k).unwrap();
            assert_eq!(ranges.len(), k);
            assert!(check_coverage(&ranges).is_empty(), "k = {k}");
        }
        let r256 = KeyRange::split_even(256).unwrap();
        assert_eq!(r256[1].name(), "01-02");
        assert!(KeyRange::split_even(0).is_err());
        assert!(KeyRange::split_even(65537).is_err());
    }

    fn coverage(names: &[&str]) -> Vec<String> {
        let ranges: Vec<KeyRange> = names.iter().map(|n| KeyRange::parse(n).unwrap()).collect();
        check_coverage(&ranges)
            .into_iter()
            .map(|p| match p {
                CoverageProblem::Gap(r) => format!("gap {r}"),
                CoverageProblem::Overlap(a, b) => format!("overlap {a} {b}"),
            })
            .collect()
    }

    #[test]
    fn coverage_finds_gaps_and_overlaps() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["-"], &[]),
            (&["-80", "80-"], &[]),
            (&["c0-", "-40", "80-c0", "40-80"], &[]),
            (&["-80", "c0-"], &["gap 80-c0"]),
            (&["-40", "30-80", "80-"], &["overlap -40 30-80"]),
            (&["40-"], &["gap -40"]),
            (&["-40"], &["gap 40-"]),
            (&[], &["gap -"]),
            (&["-", "80-"], &["overlap - 80-"]),
            (
                &["-40", "30-50", "60-80", "90-"],
                &["overlap -40 30-50", "gap 50-60", "gap 80-90"],
            ),
        ];
        for &(names, want) in cases {
            assert_eq!(coverage(names), want, "{names:?}");
        }
    }
}
