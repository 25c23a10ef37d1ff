//! Identifiers in the SQL the mover writes (quoted as everywhere in switchyard).

/// A backtick-quoted identifier.
pub fn ident(name: &str) -> String {
    shard_map::sql::quote_ident(name)
}

/// `` `db`.`table` ``.
pub fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", ident(db), ident(table))
}
