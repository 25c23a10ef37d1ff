//! Vindexes: how a sharding column's value becomes a keyspace id, and so a shard.
//!
//! Every function here is *correct or refuses*: when it cannot be sure which shard holds the
//! rows that MariaDB would consider equal to a value, it says [`Placement::Unknown`] (reads go to
//! every shard, inserts are refused), never a guess.
//!
//! - `hash` (integer columns): the keyspace id is the first 8 bytes, big-endian, of the MD5 of
//!   the integer's decimal text (`-5` hashes `"-5"`; unsigned values above `i64::MAX` hash their
//!   decimal text too). MariaDB computes the same id with
//!   `CAST(CONV(LEFT(MD5('42'),16),16,10) AS UNSIGNED)`; golden vectors pin it.
//! - `numeric` (integer columns): the value itself. Negative values have no keyspace id.
//! - `list`: explicit value-to-shard entries; a value's keyspace id is the start of its shard.
//!
//! A string value counts as an integer only when it is the canonical decimal text of one (`42`,
//! `-7`, `0`): MariaDB compares a string with an integer column numerically, so `'042'`,
//! `' 42'` or `'4.2e1'` all equal 42 there, and routing them by their text would be wrong.

use std::collections::{BTreeMap, HashMap};

use md5::{Digest, Md5};

use crate::keyrange::KeyRange;

/// A value of a sharding column as the statement carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    Int(i64),
    UInt(u64),
    /// A string literal's bytes as sent.
    Str(Vec<u8>),
}

/// Which vindex a sharded table uses, as written in the shard map.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VindexKind {
    Hash,
    Numeric,
    List,
}

impl VindexKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            VindexKind::Hash => "hash",
            VindexKind::Numeric => "numeric",
            VindexKind::List => "list",
        }
    }
}

/// A vindex ready to place values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vindex {
    Hash,
    Numeric,
    List(ListVindex),
}

/// Where the rows equal to one value live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In the shard whose range contains this keyspace id.
    Id(u64),
    /// Nowhere: no row can hold this value (a list vindex value provably matching no entry).
    /// Reads touch no shard; inserts are refused.
    Nowhere,
    /// Can't tell: reads go to every shard; inserts are refused with this reason.
    Unknown(Unplaceable),
}

/// Why a value has no certain place. The message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error(
        "sharding value '{0}' is not the canonical decimal text of an integer, so its shard \
         cannot be known (MariaDB would compare it numerically); write it as an integer"
    )]
    NotCanonicalInteger(String),
    #[error("the numeric vindex has no keyspace id for the negative value {0}")]
    Negative(i64),
    #[error("sharding value '{0}' is not in the list vindex, so no shard holds it")]
    NotInList(String),
    #[error(
        "sharding value '{0}' is not an entry of the list vindex but may compare equal to one \
         under MariaDB's collation or type conversion; use the entry's exact text"
    )]
    AmbiguousListValue(String),
    #[error("no shard covers keyspace id {0:#018x}: the shard map is not valid")]
    NoShard(u64),
}

impl Vindex {
    pub fn kind(&self) -> VindexKind {
        match self {
            Vindex::Hash => VindexKind::Hash,
            Vindex::Numeric => VindexKind::Numeric,
            Vindex::List(_) => VindexKind::List,
        }
    }

    /// Where the rows that MariaDB considers equal to `v` live.
    pub fn place(&self, v: &KeyValue) -> Placement {
        let id = match self {
            Vindex::Hash => hash_keyspace_id(v),
            Vindex::Numeric => numeric_keyspace_id(v),
            Vindex::List(list) => return list.place(v),
        };
        match id {
            Ok(id) => Placement::Id(id),
            Err(why) => Placement::Unknown(why),
        }
    }

    /// Where an inserted row with `v` goes: a keyspace id, or why the insert must be refused.
    pub fn place_insert(&self, v: &KeyValue) -> Result<u64, Unplaceable> {
        match self.place(v) {
            Placement::Id(id) => Ok(id),
            Placement::Nowhere => Err(Unplaceable::NotInList(display(v))),
            Placement::Unknown(why) => Err(why),
        }
    }
}

/// The `hash` vindex: first 8 bytes, big-endian, of MD5 of the integer's decimal text.
pub fn hash_keyspace_id(v: &KeyValue) -> Result<u64, Unplaceable> {
    let text = match v {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::UInt(u) => u.to_string(),
        KeyValue::Str(s) => match canonical_integer(s) {
            // The canonical text is the decimal text itself: hash it as it is.
            Some(_) => String::from_utf8_lossy(s).into_owned(),
            None => return Err(Unplaceable::NotCanonicalInteger(display(v))),
        },
    };
    Ok(hash_decimal_text(&text))
}

/// MD5 of `text`, first 8 bytes as a big-endian integer.
pub fn hash_decimal_text(text: &str) -> u64 {
    let digest = Md5::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Pinned `hash` vindex values: decimal text and keyspace id. Changing any of them would move
/// rows to other shards. Computed with MariaDB 10.11
/// (`CAST(CONV(LEFT(MD5(v),16),16,10) AS UNSIGNED)`) and Python's hashlib; the unit tests and
/// `tests/hash_golden_mariadb.rs` (against a live server) check them.
pub const HASH_GOLDEN_VECTORS: &[(&str, u64)] = &[
    ("0", 0xcfcd208495d565ef),
    ("1", 0xc4ca4238a0b92382),
    ("-1", 0x6bb61e3b7bce0931),
    ("2", 0xc81e728d9d4c2f63),
    ("42", 0xa1d0c6e83f027327),
    ("-5", 0x47c1b025fa18ea96),
    ("100", 0xf899139df5e10593),
    ("255", 0xfe131d7f5a6b38b2),
    ("256", 0xf718499c1c8cef67),
    ("1000000", 0x8155bc545f84d965),
    ("-42", 0x8dfcb89fd8620e3e),
    ("2147483647", 0xc588c0a459f4ccc6),
    ("-2147483648", 0x034ff5946105f089),
    ("4294967296", 0xe02af3ed70f9dc52),
    ("-9223372036854775808", 0xe12c22bb0312e787),
    ("9223372036854775807", 0x15767b252275cf51),
    ("9223372036854775808", 0x8dbd96443e092a30),
    ("18446744073709551615", 0x7e7825a3d8588a75),
    ("12345678901234567890", 0xfd85e62d9beb4542),
    ("9007199254740993", 0x322d1e02970a2dea),
];

/// The `numeric` vindex: the non-negative integer value itself.
pub fn numeric_keyspace_id(v: &KeyValue) -> Result<u64, Unplaceable> {
    let n = match v {
        KeyValue::Int(i) => Integer::Signed(*i),
        KeyValue::UInt(u) => Integer::Unsigned(*u),
        KeyValue::Str(s) => {
            canonical_integer(s).ok_or_else(|| Unplaceable::NotCanonicalInteger(display(v)))?
        }
    };
    match n {
        Integer::Signed(i) if i < 0 => Err(Unplaceable::Negative(i)),
        Integer::Signed(i) => Ok(i as u64),
        Integer::Unsigned(u) => Ok(u),
    }
}

/// An integer parsed from canonical decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integer {
    Signed(i64),
    /// Only for values above `i64::MAX`.
    Unsigned(u64),
}

/// The integer whose canonical decimal text is exactly `s`: `0`, or an optional `-` then a
/// non-zero digit then digits, within `i64::MIN..=u64::MAX`. Anything else (`-0`, `042`, `+1`,
/// spaces, exponents, decimals) is `None`.
pub fn canonical_integer(s: &[u8]) -> Option<Integer> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let canonical = match digits {
        [b'0'] => !neg,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
        [] => false,
    };
    if !canonical {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    if let Ok(i) = text.parse::<i64>() {
        Some(Integer::Signed(i))
    } else if neg {
        None
    } else {
        text.parse::<u64>().ok().map(Integer::Unsigned)
    }
}

/// A value as text for messages (lossy for non-UTF-8 strings).
fn display(v: &KeyValue) -> String {
    match v {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::UInt(u) => u.to_string(),
        KeyValue::Str(s) => String::from_utf8_lossy(s).into_owned(),
    }
}

/// The `list` vindex: each entry's text names its shard; the keyspace id of a value is the
/// start of its shard's range.
///
/// Reads must find every row MariaDB would call equal, whatever the column's type and
/// collation, so a value is placed by these rules (entries are checked at validation never to
/// collide under them):
/// - an integer value (not a string) is placed only when every entry is canonical integer
///   text, since a string column compares it numerically (`1` equals `'1abc'` and `'1.0'`);
/// - it is an entry's exact text (an integer compared as its decimal text) → that entry;
/// - it is a "plain word" (ASCII letters, digits and `_`, starting with a letter or `_`) equal
///   to an entry ignoring ASCII case → that entry (a case-insensitive collation would match it);
/// - a plain word matching no entry when every entry is a plain word, or an integer (or its
///   canonical text) matching no entry when every entry is canonical integer text → nowhere;
/// - anything else (trailing spaces, non-ASCII text, `'042'` against integer entries, ...) →
///   unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListVindex {
    exact: HashMap<Vec<u8>, u64>,
    /// Plain-word entries by their ASCII-lower-case form.
    folded: HashMap<String, u64>,
    all_plain_words: bool,
    all_integers: bool,
}

impl ListVindex {
    /// Builds the vindex from entries whose shards are already resolved to ranges. Entries whose
    /// shard is `None` (an unknown shard, reported by validation) place nowhere.
    pub fn new(entries: &BTreeMap<String, Option<KeyRange>>) -> ListVindex {
        let mut exact = HashMap::new();
        let mut folded = HashMap::new();
        for (value, range) in entries {
            let Some(range) = range else { continue };
            exact.insert(value.as_bytes().to_vec(), range.start);
            if is_plain_word(value.as_bytes()) {
                folded
                    .entry(value.to_ascii_lowercase())
                    .or_insert(range.start);
            }
        }
        ListVindex {
            exact,
            folded,
            all_plain_words: entries.keys().all(|k| is_plain_word(k.as_bytes())),
            all_integers: entries
                .keys()
                .all(|k| canonical_integer(k.as_bytes()).is_some()),
        }
    }

    fn place(&self, v: &KeyValue) -> Placement {
        let text: Vec<u8> = match v {
            KeyValue::Int(i) => i.to_string().into_bytes(),
            KeyValue::UInt(u) => u.to_string().into_bytes(),
            KeyValue::Str(s) => s.clone(),
        };
        let typed_int = matches!(v, KeyValue::Int(_) | KeyValue::UInt(_));
        if typed_int && !self.all_integers {
            // A string column compares an integer numerically: `1` equals `'1abc'` and `'1.0'`.
            return Placement::Unknown(Unplaceable::AmbiguousListValue(display(v)));
        }
        if let Some(&id) = self.exact.get(&text) {
            return Placement::Id(id);
        }
        let is_int = typed_int || canonical_integer(&text).is_some();
        if is_int {
            return if self.all_integers {
                Placement::Nowhere
            } else {
                Placement::Unknown(Unplaceable::AmbiguousListValue(display(v)))
            };
        }
        if is_plain_word(&text) {
            let lower = String::from_utf8_lossy(&text).to_ascii_lowercase();
            if let Some(&id) = self.folded.get(&lower) {
                return Placement::Id(id);
            }
            if self.all_plain_words {
                return Placement::Nowhere;
            }
        }
        Placement::Unknown(Unplaceable::AmbiguousListValue(display(v)))
    }
}

/// ASCII letters, digits and `_`, starting with a letter or `_`: text that every MariaDB
/// collation compares by its letters only up to case, and that converts to the number 0.
pub fn is_plain_word(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_golden_vectors_for_every_value_form() {
        for &(text, want) in HASH_GOLDEN_VECTORS {
            assert_eq!(hash_decimal_text(text), want, "{text}");
            let from_str = hash_keyspace_id(&KeyValue::Str(text.as_bytes().to_vec()));
            assert_eq!(from_str, Ok(want), "'{text}'");
            match canonical_integer(text.as_bytes()).unwrap() {
                Integer::Signed(i) => {
                    assert_eq!(hash_keyspace_id(&KeyValue::Int(i)), Ok(want), "{i}");
                    if let Ok(u) = u64::try_from(i) {
                        assert_eq!(hash_keyspace_id(&KeyValue::UInt(u)), Ok(want), "{u}u");
                    }
                }
                Integer::Unsigned(u) => {
                    assert_eq!(hash_keyspace_id(&KeyValue::UInt(u)), Ok(want), "{u}u");
                }
            }
        }
        assert_eq!(
            hash_keyspace_id(&KeyValue::Int(i64::MIN)),
            Ok(0xe12c22bb0312e787)
        );
        assert_eq!(
            hash_keyspace_id(&KeyValue::UInt(u64::MAX)),
            Ok(0x7e7825a3d8588a75)
        );
    }

    #[test]
    fn canonical_integer_text_accepts_only_exact_decimal() {
        let ok: &[(&str, Integer)] = &[
            ("0", Integer::Signed(0)),
            ("42", Integer::Signed(42)),
            ("-7", Integer::Signed(-7)),
            ("-9223372036854775808", Integer::Signed(i64::MIN)),
            ("9223372036854775807", Integer::Signed(i64::MAX)),
            ("9223372036854775808", Integer::Unsigned(1 << 63)),
            ("18446744073709551615", Integer::Unsigned(u64::MAX)),
        ];
        for &(s, want) in ok {
            assert_eq!(canonical_integer(s.as_bytes()), Some(want), "{s}");
        }
        let refused = [
            "",
            "-",
            "-0",
            "00",
            "042",
            "+42",
            " 42",
            "42 ",
            "4.2e1",
            "42.0",
            "0x2a",
            "abc",
            "1_000",
            "-9223372036854775809",
            "18446744073709551616",
            "٤٢",
        ];
        for s in refused {
            assert_eq!(canonical_integer(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn hash_and_numeric_refuse_what_they_cannot_place() {
        let str_ = |s: &str| KeyValue::Str(s.as_bytes().to_vec());
        for s in ["042", " 42", "4.2e1", "abc", "-0", ""] {
            for v in [Vindex::Hash, Vindex::Numeric] {
                assert!(
                    matches!(
                        v.place(&str_(s)),
                        Placement::Unknown(Unplaceable::NotCanonicalInteger(_))
                    ),
                    "{v:?} {s:?}"
                );
            }
        }
        let numeric: &[(KeyValue, Placement)] = &[
            (KeyValue::Int(0), Placement::Id(0)),
            (KeyValue::Int(42), Placement::Id(42)),
            (str_("42"), Placement::Id(42)),
            (KeyValue::UInt(u64::MAX), Placement::Id(u64::MAX)),
            (str_("18446744073709551615"), Placement::Id(u64::MAX)),
            (
                KeyValue::Int(-1),
                Placement::Unknown(Unplaceable::Negative(-1)),
            ),
            (str_("-5"), Placement::Unknown(Unplaceable::Negative(-5))),
        ];
        for (v, want) in numeric {
            assert_eq!(&Vindex::Numeric.place(v), want, "{v:?}");
        }
        let err = Vindex::Numeric
            .place_insert(&KeyValue::Int(-3))
            .unwrap_err();
        assert!(err.to_string().contains("negative value -3"), "{err}");
        let err = Vindex::Hash.place_insert(&str_("042")).unwrap_err();
        assert!(err.to_string().contains("'042'"), "{err}");
    }

    fn list(entries: &[(&str, &str)]) -> Vindex {
        let map = entries
            .iter()
            .map(|(v, s)| (v.to_string(), Some(KeyRange::parse(s).unwrap())))
            .collect();
        Vindex::List(ListVindex::new(&map))
    }

    #[test]
    fn list_places_exact_and_case_folded_words_and_refuses_the_rest() {
        let words = list(&[("eu", "-80"), ("us", "80-"), ("Asia_1", "80-")]);
        let str_ = |s: &str| KeyValue::Str(s.as_bytes().to_vec());
        let high = 0x80 << 56;
        let cases: &[(KeyValue, Placement)] = &[
            (str_("eu"), Placement::Id(0)),
            (str_("us"), Placement::Id(high)),
            (str_("EU"), Placement::Id(0)),
            (str_("asia_1"), Placement::Id(high)),
            (str_("mars"), Placement::Nowhere),
            (
                str_("eu "),
                Placement::Unknown(Unplaceable::AmbiguousListValue("eu ".into())),
            ),
            (
                str_("éu"),
                Placement::Unknown(Unplaceable::AmbiguousListValue("éu".into())),
            ),
            (
                KeyValue::Int(0),
                Placement::Unknown(Unplaceable::AmbiguousListValue("0".into())),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(&words.place(v), want, "{v:?}");
        }
        let ints = list(&[("1", "-80"), ("2", "80-"), ("-3", "80-")]);
        let cases: &[(KeyValue, Placement)] = &[
            (KeyValue::Int(1), Placement::Id(0)),
            (KeyValue::UInt(2), Placement::Id(high)),
            (KeyValue::Int(-3), Placement::Id(high)),
            (str_("2"), Placement::Id(high)),
            (KeyValue::Int(7), Placement::Nowhere),
            (str_("7"), Placement::Nowhere),
            (
                str_("01"),
                Placement::Unknown(Unplaceable::AmbiguousListValue("01".into())),
            ),
            (
                str_("x"),
                Placement::Unknown(Unplaceable::AmbiguousListValue("x".into())),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(&ints.place(v), want, "{v:?}");
        }
        let err = ints.place_insert(&KeyValue::Int(7)).unwrap_err();
        assert_eq!(err, Unplaceable::NotInList("7".into()));
        assert_eq!(words.place_insert(&str_("eu")), Ok(0));
    }
}
