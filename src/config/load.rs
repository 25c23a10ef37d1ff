//! Reading a configuration file into one TOML table before it becomes a [`Config`]: the
//! files of `include_dir` merged in (one file per cluster is the usual layout), then every
//! `enc:` value decrypted with the key file. Problems are collected, not stopped at.
//!
//! [`Config`]: super::Config

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::secrets::{self, Key};
use super::ConfigError;

/// Parses `path` (with its includes and encrypted values) into a [`Config`], not yet
/// validated.
///
/// [`Config`]: super::Config
pub(super) fn parse(path: &Path) -> Result<super::Config, ConfigError> {
    parse_str(&read(path)?, path)
}

/// Parses `text` as if it were the file `path` (which names it in errors and anchors its
/// relative paths), not yet validated.
pub(super) fn parse_str(text: &str, path: &Path) -> Result<super::Config, ConfigError> {
    let table = parse_text(path, text)?;
    let parse_error = |source| ConfigError::Parse {
        path: path.display().to_string(),
        source: Box::new(source),
    };
    if !table.contains_key("include_dir") && !any_encrypted(&table) {
        // Straight from the text, so that errors point at lines.
        return toml::from_str(text).map_err(parse_error);
    }
    let table = expand(path, table)?;
    Value::Table(table).try_into().map_err(parse_error)
}

/// `table` (read from `path`) with the files of its `include_dir` merged in and its `enc:`
/// values decrypted, or every problem found on the way.
fn expand(path: &Path, mut table: Table) -> Result<Table, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    if let Some(dir) = table.get("include_dir") {
        match dir.as_str() {
            Some(dir) => {
                let dir = resolve(base, dir);
                for file in include_files(&dir, &mut problems) {
                    match parse_file(&file) {
                        Ok(other) => merge(&mut table, other, "", &file, &mut problems),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
            }
            None => problems.push("include_dir: must be a path".into()),
        }
    }
    if any_encrypted(&table) {
        match key_for(&table, base) {
            Ok(key) => decrypt_all(&mut table, "", &key, &mut problems),
            Err(why) => problems.push(format!(
                "encrypted values (`enc:...`) need a key file: {why}"
            )),
        }
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_text(path: &Path, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}

fn parse_file(path: &Path) -> Result<Table, ConfigError> {
    parse_text(path, &read(path)?)
}

/// A path from the configuration, relative to the file that names it.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The `*.toml` files of `dir`, in name order (so the merged result does not depend on the
/// directory's listing order).
fn include_files(dir: &Path, problems: &mut Vec<String>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("include_dir {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// Adds `other` (from `file`) to `into`: arrays (`[[clusters]]`, `[[router.users]]`, ...)
/// are appended, tables merged key by key; a setting given twice is a problem, not a silent
/// override.
fn merge(into: &mut Table, other: Table, prefix: &str, file: &Path, problems: &mut Vec<String>) {
    for (k, v) in other {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if key == "include_dir" {
            problems.push(format!(
                "{}: include_dir may only be set in the main file",
                file.display()
            ));
            continue;
        }
        match (into.get_mut(&k), v) {
            (None, v) => {
                into.insert(k, v);
            }
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b, &key, file, problems),
            (Some(_), _) => problems.push(format!(
                "{}: `{key}` is already set in another file",
                file.display()
            )),
        }
    }
}

fn any_encrypted(t: &Table) -> bool {
    t.values().any(has_encrypted)
}

fn has_encrypted(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with(secrets::PREFIX),
        Value::Array(a) => a.iter().any(has_encrypted),
        Value::Table(t) => any_encrypted(t),
        _ => false,
    }
}

/// The key named by `key_file` (relative to the main file), else by `SWITCHYARD_KEY_FILE`.
fn key_for(table: &Table, base: &Path) -> Result<Key, String> {
    let path = match table.get("key_file").and_then(Value::as_str) {
        Some(p) => resolve(base, p),
        None => match std::env::var_os("SWITCHYARD_KEY_FILE") {
            Some(p) => PathBuf::from(p),
            None => return Err("set key_file or SWITCHYARD_KEY_FILE".into()),
        },
    };
    Key::read(&path).map_err(|e| e.to_string())
}

/// Replaces every `enc:` string with its plaintext; a value that does not decrypt is a
/// problem naming where it is (never the value).
fn decrypt_all(t: &mut Table, prefix: &str, key: &Key, problems: &mut Vec<String>) {
    for (k, v) in t.iter_mut() {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        decrypt_value(v, &path, key, problems);
    }
}

fn decrypt_value(v: &mut Value, path: &str, key: &Key, problems: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with(secrets::PREFIX) => match key.decrypt(s) {
            Ok(plain) => *s = plain,
            Err(e) => problems.push(format!("{path}: {e}")),
        },
        Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                decrypt_value(item, &format!("{path}[{i}]"), key, problems);
            }
        }
        Value::Table(t) => decrypt_all(t, path, key, problems),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> Table {
        s.parse().unwrap()
    }

    #[test]
    fn arrays_append_tables_merge_and_duplicates_are_problems() {
        let mut a =
            table("[router]\nlisten = 'x'\n[[clusters]]\nname = 'c1'\n[[router.users]]\nname='u'");
        let b = table(
            "[router]\nmax_connections = 5\n[[clusters]]\nname = 'c2'\n[[router.users]]\nname='v'",
        );
        let mut problems = Vec::new();
        merge(&mut a, b, "", Path::new("b.toml"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(a["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(a["router"]["users"].as_array().unwrap().len(), 2);
        assert_eq!(a["router"]["max_connections"].as_integer(), Some(5));

        let c = table("include_dir = 'z'\n[router]\nlisten = 'y'");
        merge(&mut a, c, "", Path::new("c.toml"), &mut problems);
        assert_eq!(
            problems,
            vec![
                "c.toml: include_dir may only be set in the main file".to_string(),
                "c.toml: `router.listen` is already set in another file".to_string(),
            ]
        );
        assert_eq!(a["router"]["listen"].as_str(), Some("x"));
    }

    #[test]
    fn encrypted_values_are_found_anywhere() {
        assert!(any_encrypted(&table(
            "[[router.users]]\npassword = 'enc:abc'"
        )));
        assert!(!any_encrypted(&table("a = 'encrypted'")));
    }
}
