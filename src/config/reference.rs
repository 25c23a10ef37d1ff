//! The configuration reference page (`docs/configuration.md`, `switchyard config reference`),
//! generated from the configuration types themselves: their doc comments, types and defaults,
//! through their JSON schema. A test keeps the committed page equal to this output.

use std::fmt::Write;

use serde_json::{Map, Value};

/// The reference page as Markdown.
pub fn markdown() -> String {
    generate().0
}

/// Every option's dotted path (`router.listen`, `clusters.nodes`; not the tables that hold
/// them), for the check that the example file shows them all.
pub fn option_paths() -> Vec<String> {
    generate().1
}

/// The page, and the paths of the options it lists.
fn generate() -> (String, Vec<String>) {
    let schema = serde_json::to_value(schemars::schema_for!(super::Config)).unwrap_or_default();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the code by `switchyard config reference`; do not edit by hand.\n\
         Every option of `switchyard serve --config FILE` (TOML), with its type and default.\n\
         [`config/serve.toml`](../config/serve.toml) shows them in a working file. Any string can\n\
         be written `enc:...` (see `switchyard encrypt`). Unknown keys are errors.\n",
    );
    let mut paths = Vec::new();
    let mut sections = vec![(String::new(), false, schema.clone())];
    while !sections.is_empty() {
        let (path, list, object) = sections.remove(0);
        let mut nested = Vec::new();
        section(
            &mut out,
            &path,
            list,
            &object,
            &defs,
            &mut nested,
            &mut paths,
        );
        sections.splice(0..0, nested);
    }
    (out, paths)
}

/// One table of options; nested tables and lists of tables are pushed to `nested`, the
/// other options' paths to `paths`.
fn section(
    out: &mut String,
    path: &str,
    list: bool,
    object: &Value,
    defs: &Map<String, Value>,
    nested: &mut Vec<(String, bool, Value)>,
    paths: &mut Vec<String>,
) {
    let object = resolve(object, defs);
    let heading = match (path.is_empty(), list) {
        (true, _) => "top level".to_string(),
        (false, true) => format!("`[[{path}]]`"),
        (false, false) => format!("`[{path}]`"),
    };
    let _ = write!(out, "\n## {heading}\n\n");
    if let Some(d) = object.get("description").and_then(Value::as_str) {
        if !path.is_empty() {
            let _ = write!(out, "{}\n\n", one_line(d));
        }
    }
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    out.push_str("| option | type | default | what |\n|---|---|---|---|\n");
    for (name, prop) in props {
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let (ty, table) = type_of(prop, defs);
        let is_table = table.is_some();
        match table {
            Some((is_list, target)) => nested.push((full.clone(), is_list, target)),
            None => paths.push(full.clone()),
        }
        let default = match prop.get("default") {
            _ if required.contains(&name.as_str()) => "(required)".to_string(),
            // Each of its fields has its own default, below.
            Some(Value::Object(_)) if is_table => "-".to_string(),
            Some(Value::Null) | None => "-".to_string(),
            Some(v) => format!("`{}`", toml_text(v)),
        };
        let resolved = resolve(prop, defs);
        let what = prop
            .get("description")
            .or_else(|| resolved.get("description"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        let _ = writeln!(out, "| `{name}` | {ty} | {default} | {what} |");
    }
}

/// A property's type in words, and the object schema to document on its own (with whether
/// it is a list of tables) when it is a table.
fn type_of(prop: &Value, defs: &Map<String, Value>) -> (String, Option<(bool, Value)>) {
    // `Option<T>`: `anyOf: [T, null]` or `type: [t, "null"]`.
    if let Some(any) = prop.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [only] = non_null.as_slice() {
            return type_of(only, defs);
        }
    }
    let target = resolve(prop, defs);
    if let Some(values) = enum_values(&target) {
        return (values, None);
    }
    let ty = match target.get("type") {
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_string(),
        Some(Value::String(t)) => t.clone(),
        _ => "any".into(),
    };
    match ty.as_str() {
        "object" if target.get("properties").is_some() => ("table".into(), Some((false, target))),
        "object" => ("table of strings".into(), None),
        "array" => {
            let items = target.get("items").cloned().unwrap_or(Value::Null);
            let (inner, table) = type_of(&items, defs);
            match table {
                Some((_, t)) => ("list of tables".into(), Some((true, t))),
                None => (format!("list of {inner}"), None),
            }
        }
        "integer" => {
            let unsigned = target.get("minimum").and_then(Value::as_f64) == Some(0.0);
            (
                if unsigned { "integer ≥ 0" } else { "integer" }.into(),
                None,
            )
        }
        other => (other.to_string(), None),
    }
}

/// `a` \| `b` for an enum of strings (plain or with a description per value).
fn enum_values(schema: &Value) -> Option<String> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let v: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", toml_text(v)))
            .collect();
        return Some(v.join(" \\| "));
    }
    let variants = schema.get("oneOf").and_then(Value::as_array)?;
    let mut v = Vec::new();
    for variant in variants {
        if let Some(c) = variant.get("const") {
            v.push(format!("`{}`", toml_text(c)));
        } else if let Some(e) = variant.get("enum").and_then(Value::as_array) {
            v.extend(e.iter().map(|x| format!("`{}`", toml_text(x))));
        } else {
            return None;
        }
    }
    Some(v.join(" \\| "))
}

/// The schema a `$ref` points to, or the schema itself.
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .cloned()
            .unwrap_or(Value::Null),
        None => schema.clone(),
    }
}

/// A default written as it would be in the file.
fn toml_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
