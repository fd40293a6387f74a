//! Shared output helpers: the JSON form of a key-value (as the HTTP API writes
//! it), how a value looks in a table, and a small aligned-column table.
//!
//! Renderers return bytes instead of printing, so the formats are unit-tested
//! without a process.

use ballast_client::KeyValue;
use base64::Engine as _;
use serde_json::{json, Value};

/// A key-value as the HTTP API writes it: the value as a UTF-8 string, or
/// base64 with `"encoding": "base64"` when it is not UTF-8.
pub fn kv_json(kv: &KeyValue) -> Value {
    let mut doc = json!({
        "key": kv.key,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    match std::str::from_utf8(&kv.value) {
        Ok(s) => doc["value"] = json!(s),
        Err(_) => {
            doc["value"] = json!(base64::engine::general_purpose::STANDARD.encode(&kv.value));
            doc["encoding"] = json!("base64");
        }
    }
    doc
}

/// Key-values as a JSON array.
pub fn kvs_json(kvs: &[KeyValue]) -> Value {
    Value::Array(kvs.iter().map(kv_json).collect())
}

/// One JSON document and a newline.
pub fn json_bytes(doc: &Value) -> Vec<u8> {
    let mut out = doc.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// A value in a table cell: UTF-8 text with control characters escaped (so a
/// row stays one line), or `base64:` and the base64 of anything else.
pub fn display_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => display_text(s),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(value)
        ),
    }
}

/// Text with control characters escaped (`\n`, `\t`, `\u{1b}`).
pub fn display_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows under a header, columns padded to their widest cell, two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key-values as a table: KEY, VALUE, CREATE_REV, MOD_REV, VERSION.
pub fn kvs_table(kvs: &[KeyValue]) -> String {
    let mut t = Table::new(&["KEY", "VALUE", "CREATE_REV", "MOD_REV", "VERSION"]);
    for kv in kvs {
        t.row(vec![
            display_text(&kv.key),
            display_value(&kv.value),
            kv.create_revision.to_string(),
            kv.mod_revision.to_string(),
            kv.version.to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
pub fn test_kv(key: &str, value: &[u8]) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: 3,
        mod_revision: 5,
        version: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_json_uses_base64_only_for_binary() {
        let doc = kv_json(&test_kv("a", b"green"));
        assert_eq!(doc["value"], "green");
        assert!(doc.get("encoding").is_none());
        assert_eq!(doc["mod_revision"], 5);
        let doc = kv_json(&test_kv("b", &[0xff, 0x00, 0x01]));
        assert_eq!(doc["value"], "/wAB");
        assert_eq!(doc["encoding"], "base64");
    }

    #[test]
    fn values_in_tables_stay_on_one_line() {
        assert_eq!(display_value(b"green"), "green");
        assert_eq!(display_value(b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(display_value(&[0xff, 0x00, 0x01]), "base64:/wAB");
        assert_eq!(display_value("café".as_bytes()), "café");
    }

    #[test]
    fn table_aligns_columns() {
        let text = kvs_table(&[test_kv("app/mode", b"green"), test_kv("b", b"x")]);
        assert_eq!(
            text,
            "KEY       VALUE  CREATE_REV  MOD_REV  VERSION\n\
             app/mode  green  3           5        2\n\
             b         x      3           5        2\n"
        );
    }

    #[test]
    fn json_bytes_is_one_line() {
        let out = json_bytes(&json!({"a": [1, 2]}));
        assert_eq!(out, b"{\"a\":[1,2]}\n");
    }
}
