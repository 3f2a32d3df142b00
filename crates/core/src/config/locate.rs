//! Positions in the config source: byte offsets ↔ dotted key paths, using
//! `toml_edit`'s spans (serde's tree forgets where a value came from).

use std::fmt::Write as _;
use std::ops::Range;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// One step of a path into the document: a key, or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// `pipelines.web.rollout.min_healthy_percent`, `patch.severities[1]`; keys
/// that are not bare TOML keys are quoted.
pub(crate) fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    let _ = write!(out, "{k:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Start offset of the deepest existing element of `path`: the key itself,
/// the array element, or else the nearest parent key that exists. `None`
/// when not even the first key is in the document.
pub(crate) fn offset_of(doc: &ImDocument<&str>, path: &[Seg]) -> Option<usize> {
    let mut best = None;
    let mut item: &Item = doc.as_item();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let Some(table) = item.as_table_like() else {
                    break;
                };
                let (Some(key), Some(child)) = (table.key(k), table.get(k)) else {
                    break;
                };
                best = key.span().map(|s| s.start).or(best);
                item = child;
            }
            Seg::Index(i) => {
                let Some(el) = item.as_array().and_then(|a| a.get(*i)) else {
                    break;
                };
                best = el.span().map(|s| s.start).or(best);
                // Arrays of inline tables are not used by the config; stop here.
                break;
            }
        }
    }
    best
}

/// The path of the smallest key or value whose span contains `offset`.
pub(crate) fn path_at(doc: &ImDocument<&str>, offset: usize) -> Vec<Seg> {
    let mut best: Option<(usize, Vec<Seg>)> = None;
    let mut path = Vec::new();
    if let Some(table) = doc.as_item().as_table_like() {
        walk_table(table, offset, &mut path, &mut best);
    }
    best.map(|(_, p)| p).unwrap_or_default()
}

fn consider(span: Option<Range<usize>>, offset: usize, path: &[Seg], best: &mut Option<(usize, Vec<Seg>)>) {
    let Some(span) = span else { return };
    let hit = span.contains(&offset) || (span.is_empty() && span.start == offset);
    if hit && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
        *best = Some((span.len(), path.to_vec()));
    }
}

fn walk_table(table: &dyn TableLike, offset: usize, path: &mut Vec<Seg>, best: &mut Option<(usize, Vec<Seg>)>) {
    for (k, child) in table.iter() {
        path.push(Seg::Key(k.to_string()));
        consider(table.key(k).and_then(|key| key.span()), offset, path, best);
        walk_item(child, offset, path, best);
        path.pop();
    }
}

fn walk_item(item: &Item, offset: usize, path: &mut Vec<Seg>, best: &mut Option<(usize, Vec<Seg>)>) {
    consider(item.span(), offset, path, best);
    match item {
        Item::Value(v) => walk_value(v, offset, path, best),
        Item::Table(t) => walk_table(t, offset, path, best),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                consider(t.span(), offset, path, best);
                walk_table(t, offset, path, best);
                path.pop();
            }
        }
        Item::None => {}
    }
}

fn walk_value(value: &Value, offset: usize, path: &mut Vec<Seg>, best: &mut Option<(usize, Vec<Seg>)>) {
    match value {
        Value::Array(a) => {
            for (i, el) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                consider(el.span(), offset, path, best);
                walk_value(el, offset, path, best);
                path.pop();
            }
        }
        Value::InlineTable(t) => walk_table(t, offset, path, best),
        _ => {}
    }
}
