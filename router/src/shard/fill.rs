//! Global AUTO_INCREMENT in an INSERT's text: which rows leave the column to the server
//! (omitted, NULL or 0), and the text with the router's ids written in instead (appended to
//! the column list and rows, or in place of the NULL/0), cut exactly like a split INSERT.

use sqlparser::ast::{Expr, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::split::{row_spans, LineOffsets};

/// Which rows of an INSERT need a generated AUTO_INCREMENT value for `column` (whose position
/// in the table is `table_pos`, 0-based): the rows of a VALUES list that omit the column, or
/// give it NULL or 0. `None` when the statement is not such an INSERT or no row needs one.
/// Also returns the column's position in the rows (`None` when the column list omits it).
pub fn auto_increment_rows(
    sql: &str,
    column: &str,
    table_pos: usize,
) -> Option<(Option<usize>, Vec<bool>)> {
    use sqlparser::ast::{SetExpr, Value};
    let Some(Statement::Insert(i)) = super::plan::parse_one(sql) else {
        return None;
    };
    if !i.assignments.is_empty() {
        return None;
    }
    let SetExpr::Values(values) = i.source.as_ref()?.body.as_ref() else {
        return None;
    };
    let at = if i.columns.is_empty() {
        Some(table_pos)
    } else {
        i.columns.iter().position(|c| {
            c.0.last()
                .and_then(|p| p.as_ident())
                .is_some_and(|id| id.value.eq_ignore_ascii_case(column))
        })
    };
    let needs: Vec<bool> = values
        .rows
        .iter()
        .map(|row| match at {
            None => true,
            Some(p) => match row.get(p) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::Null => true,
                    Value::Number(n, _) => n == "0",
                    _ => false,
                },
                _ => false,
            },
        })
        .collect();
    needs.iter().any(|n| *n).then_some((at, needs))
}

/// The INSERT with `ids` (one per row that `needs` one, in order) written in: appended to the
/// column list and each row when the list omits the column (`at` is `None`; every row needs
/// one then), else in place of the row's NULL or 0.
pub fn fill_auto_increment(
    sql: &str,
    column: &str,
    at: Option<usize>,
    needs: &[bool],
    ids: &[u64],
) -> Option<String> {
    let spans = row_spans(sql)?;
    if spans.len() != needs.len() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 24 * ids.len());
    let mut last = 0;
    if at.is_none() {
        // The column list's closing parenthesis: the last `)` before the first row.
        let close = sql[..spans[0].0].rfind(')')?;
        out.push_str(&sql[..close]);
        out.push_str(", ");
        out.push_str(&shard_map::sql::quote_ident(column));
        last = close;
    }
    let mut next = ids.iter();
    for ((a, b), need) in spans.iter().zip(needs) {
        out.push_str(&sql[last..*a]);
        let row = &sql[*a..*b];
        if *need {
            let id = next.next()?;
            match at {
                None => {
                    out.push_str(&row[..row.len() - 1]);
                    out.push_str(&format!(", {id})"));
                }
                Some(p) => {
                    let (x, y) = element_span(row, p)?;
                    out.push_str(&row[..x]);
                    out.push_str(&id.to_string());
                    out.push_str(&row[y..]);
                }
            }
        } else {
            out.push_str(row);
        }
        last = *b;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// The byte range (trimmed) of the `p`-th element of a `( ... )` row.
fn element_span(row: &str, p: usize) -> Option<(usize, usize)> {
    let tokens = Tokenizer::new(&MySqlDialect {}, row)
        .tokenize_with_location()
        .ok()?;
    let offsets = LineOffsets::new(row);
    let mut depth = 0;
    let mut index = 0;
    let mut start: Option<usize> = None;
    let mut end = 0;
    for t in &tokens {
        match &t.token {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return (index == p).then_some((start?, end));
                }
            }
            Token::Comma if depth == 1 => {
                if index == p {
                    return Some((start?, end));
                }
                index += 1;
                start = None;
                continue;
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        if index == p {
            if start.is_none() {
                start = Some(offsets.at(t.span.start)?);
            }
            end = offsets.at(t.span.end)?;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_fill_omitted_null_and_zero_values() {
        let sql = "INSERT INTO t (name) VALUES ('a'), ('b') ON DUPLICATE KEY UPDATE name = 'c'";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!((at, needs.clone()), (None, vec![true, true]));
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[7, 8]).unwrap(),
            "INSERT INTO t (name, `id`) VALUES ('a', 7), ('b', 8) ON DUPLICATE KEY UPDATE name = 'c'"
        );
        let sql = "INSERT INTO t VALUES (NULL, 'a'), (5, 'b'), ( 0 , f(1, 2))";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!((at, needs.clone()), (Some(0), vec![true, false, true]));
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[10, 11]).unwrap(),
            "INSERT INTO t VALUES (10, 'a'), (5, 'b'), ( 11 , f(1, 2))"
        );
        let sql = "INSERT INTO t (name, id) VALUES ('x', 0)";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[3]).unwrap(),
            "INSERT INTO t (name, id) VALUES ('x', 3)"
        );
        assert!(auto_increment_rows("INSERT INTO t (id) VALUES (4)", "id", 0).is_none());
        assert!(auto_increment_rows("INSERT INTO t SET name = 'a'", "id", 0).is_none());
    }
}
