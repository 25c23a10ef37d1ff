//! Row values as the mover handles them: primary keys saved in the stream's state (JSON),
//! ordered as the source's index orders them, and sharding-column values turned into keyspace
//! ids.
//!
//! Keys are compared here, not by the server, while a table is being copied (a change to a
//! row the copy has not reached yet is left to the copy). That is exact only for the key types
//! whose order does not depend on a collation: integers and binary strings. Other key types
//! are refused when a move is created ([`crate::schema`]).

use std::cmp::Ordering;

use mysql_async::Value;
use serde::{Deserialize, Serialize};
use shard_map::vindex::{KeyValue, Placement, Vindex};
use shard_map::KeyRange;

use crate::error::MoverError;

/// A key value in the stream's saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPart {
    Int(i64),
    UInt(u64),
    /// Bytes, hex-encoded in JSON.
    Bytes(#[serde(with = "hex_bytes")] Vec<u8>),
}

impl KeyPart {
    /// The key part of a row value; `None` for values no primary key holds (NULL, floats,
    /// dates: refused earlier).
    pub fn from_value(v: &Value) -> Option<KeyPart> {
        match v {
            Value::Int(i) => Some(KeyPart::Int(*i)),
            Value::UInt(u) => Some(KeyPart::UInt(*u)),
            Value::Bytes(b) => Some(KeyPart::Bytes(b.clone())),
            _ => None,
        }
    }

    /// As a statement parameter.
    pub fn to_value(&self) -> Value {
        match self {
            KeyPart::Int(i) => Value::Int(*i),
            KeyPart::UInt(u) => Value::UInt(*u),
            KeyPart::Bytes(b) => Value::Bytes(b.clone()),
        }
    }
}

impl PartialOrd for KeyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Integers compare by value whatever their signedness; bytes bytewise (binary collations).
/// An integer sorts before bytes (a column never holds both).
impl Ord for KeyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        let int = |k: &KeyPart| match k {
            KeyPart::Int(i) => Some(i128::from(*i)),
            KeyPart::UInt(u) => Some(i128::from(*u)),
            KeyPart::Bytes(_) => None,
        };
        match (int(self), int(other), self, other) {
            (Some(a), Some(b), _, _) => a.cmp(&b),
            (Some(_), None, _, _) => Ordering::Less,
            (None, Some(_), _, _) => Ordering::Greater,
            (None, None, KeyPart::Bytes(a), KeyPart::Bytes(b)) => a.cmp(b),
            (None, None, _, _) => unreachable!("only bytes are not integers"),
        }
    }
}

/// A primary key: its parts in the key's column order.
pub type Key = Vec<KeyPart>;

/// The primary key of a row, from the key's column positions.
pub fn key_of(row: &[Value], pk: &[usize]) -> Result<Key, MoverError> {
    pk.iter()
        .map(|&i| {
            let v = row.get(i).ok_or_else(|| {
                MoverError::Data(format!("row of {} columns has no column {i}", row.len()))
            })?;
            KeyPart::from_value(v).ok_or_else(|| {
                MoverError::Data(format!(
                    "primary key column {i} holds {v:?}, not a key value"
                ))
            })
        })
        .collect()
}

/// Which rows of a table one target receives.
#[derive(Debug, Clone)]
pub enum RowFilter {
    /// Every row (reference tables, MoveTables into a single shard).
    All,
    /// Rows whose sharding column maps into `range`.
    Range {
        /// The sharding column's position in the table.
        column: usize,
        vindex: Vindex,
        range: KeyRange,
    },
}

impl RowFilter {
    /// Whether `row` belongs to the target. A row whose key has no keyspace id (NULL, a value
    /// the vindex cannot place) is an error, never silently dropped.
    pub fn keeps(&self, row: &[Value]) -> Result<bool, MoverError> {
        let RowFilter::Range {
            column,
            vindex,
            range,
        } = self
        else {
            return Ok(true);
        };
        let v = row.get(*column).ok_or_else(|| {
            MoverError::Data(format!(
                "row of {} columns has no column {column}",
                row.len()
            ))
        })?;
        let key = match v {
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::UInt(*u),
            Value::Bytes(b) => KeyValue::Str(b.clone()),
            other => {
                return Err(MoverError::Data(format!(
                    "sharding column value {other:?} has no keyspace id"
                )))
            }
        };
        match vindex.place(&key) {
            Placement::Id(id) => Ok(range.contains(id)),
            Placement::Nowhere => Err(MoverError::Data(format!(
                "sharding column value {key:?} maps to no shard"
            ))),
            Placement::Unknown(why) => Err(MoverError::Data(format!(
                "sharding column value {key:?} has no keyspace id: {why}"
            ))),
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_the_index() {
        assert!(KeyPart::Int(-1) < KeyPart::UInt(0));
        assert!(KeyPart::UInt(u64::MAX) > KeyPart::Int(i64::MAX));
        assert!(KeyPart::Bytes(b"a".to_vec()) < KeyPart::Bytes(b"ab".to_vec()));
        let a: Key = vec![KeyPart::Int(1), KeyPart::Int(9)];
        let b: Key = vec![KeyPart::Int(2), KeyPart::Int(0)];
        assert!(a < b);
    }

    #[test]
    fn keys_round_trip_through_json() {
        let k: Key = vec![
            KeyPart::Int(-3),
            KeyPart::UInt(u64::MAX),
            KeyPart::Bytes(vec![0, 0xff]),
        ];
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(
            j,
            r#"[{"int":-3},{"uint":18446744073709551615},{"bytes":"00ff"}]"#
        );
        assert_eq!(serde_json::from_str::<Key>(&j).unwrap(), k);
        assert!(serde_json::from_str::<Key>(r#"[{"bytes":"0"}]"#).is_err());
    }

    #[test]
    fn filters_place_rows_by_their_keyspace_id() {
        let f = RowFilter::Range {
            column: 1,
            vindex: Vindex::Numeric,
            range: KeyRange::parse("-80").unwrap(),
        };
        assert!(f.keeps(&[Value::NULL, Value::Int(5)]).unwrap());
        assert!(!f
            .keeps(&[Value::NULL, Value::UInt(0x8000_0000_0000_0000)])
            .unwrap());
        assert!(f.keeps(&[Value::NULL, Value::NULL]).is_err());
        assert!(f.keeps(&[Value::NULL, Value::Int(-1)]).is_err());
        assert!(RowFilter::All.keeps(&[]).unwrap());
    }
}
