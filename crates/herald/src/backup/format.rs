//! The payload format: UTF-8 JSON Lines, encrypted as a whole with age. Documented in
//! docs/operations.md ("The backup format") so that a backup stays readable without Herald:
//!
//! ```text
//! {"herald_backup":1,"backup_id":"bkp_…","created_at":"…","backend":"sqlite","schema_version":11,"herald_version":"…"}
//! {"table":"subjects","columns":["id","phone_index",…]}
//! ["sub_…",{"b64":"…"},…]                      one line per row, in the table's key order
//! {"file":"audit-witness.jsonl","text":"…"}      the witness, the erasure ledger, the config
//! {"end":{"tables":31,"rows":123456}}
//! ```
//!
//! A value is `null`, an integer, a string, `true`/`false`, `{"b64": "…"}` for bytes
//! (standard base64) or `{"real": "…"}` for a float (its shortest exact decimal form). The `end` line proves the payload complete.

use data_encoding::BASE64;
use herald_store::snapshot::Value;
use serde_json::{Map, Value as Json, json};

pub const FORMAT_VERSION: u64 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub backup_id: String,
    pub created_at: String,
    pub backend: String,
    pub schema_version: i64,
    pub herald_version: String,
}

/// One line of the payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Header(Header),
    Table { name: String, columns: Vec<String> },
    Row(Vec<Value>),
    File { name: String, text: String },
    End { tables: u64, rows: u64 },
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        // Rust's shortest round-trip form, as text: JSON parsers may round floats.
        Value::Real(r) => json!({"real": r.to_string()}),
        Value::Text(t) => Json::String(t.clone()),
        Value::Bytes(b) => json!({"b64": BASE64.encode(b)}),
        Value::Bool(b) => Json::Bool(*b),
    }
}

fn json_value(json: Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => {
            Value::Integer(n.as_i64().ok_or("a number that is not a 64-bit integer")?)
        }
        Json::String(s) => Value::Text(s),
        Json::Object(map) if map.len() == 1 && map.contains_key("real") => Value::Real(
            map.get("real")
                .and_then(Json::as_str)
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|f| f.is_finite())
                .ok_or("a real that is not a finite number")?,
        ),
        Json::Object(map) => {
            let text = map
                .get("b64")
                .and_then(Json::as_str)
                .filter(|_| map.len() == 1)
                .ok_or("an object value other than {\"b64\": …}")?;
            Value::Bytes(
                BASE64
                    .decode(text.as_bytes())
                    .map_err(|_| "bytes that are not base64")?,
            )
        }
        Json::Array(_) => return Err("a nested array".into()),
    })
}

/// The record as one line (no newline).
pub fn encode(record: &Record) -> String {
    match record {
        Record::Header(h) => json!({
            "herald_backup": FORMAT_VERSION,
            "backup_id": h.backup_id,
            "created_at": h.created_at,
            "backend": h.backend,
            "schema_version": h.schema_version,
            "herald_version": h.herald_version,
        })
        .to_string(),
        Record::Table { name, columns } => json!({"table": name, "columns": columns}).to_string(),
        Record::Row(values) => Json::Array(values.iter().map(value_json).collect()).to_string(),
        Record::File { name, text } => json!({"file": name, "text": text}).to_string(),
        Record::End { tables, rows } => {
            json!({"end": {"tables": tables, "rows": rows}}).to_string()
        }
    }
}

fn text(map: &Map<String, Json>, key: &str) -> Result<String, String> {
    map.get(key)
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("`{key}` is missing"))
}

/// Parses one line. Errors say what is wrong, never the line (it may hold ciphertext of
/// personal data, and it is long).
pub fn decode(line: &str) -> Result<Record, String> {
    let json: Json = serde_json::from_str(line).map_err(|_| "a line is not JSON".to_owned())?;
    match json {
        Json::Array(values) => Ok(Record::Row(
            values
                .into_iter()
                .map(json_value)
                .collect::<Result<_, _>>()?,
        )),
        Json::Object(map) => {
            if let Some(version) = map.get("herald_backup") {
                if version.as_u64() != Some(FORMAT_VERSION) {
                    return Err(format!(
                        "backup format version {version} is not supported (this Herald reads {FORMAT_VERSION})"
                    ));
                }
                return Ok(Record::Header(Header {
                    backup_id: text(&map, "backup_id")?,
                    created_at: text(&map, "created_at")?,
                    backend: text(&map, "backend")?,
                    schema_version: map
                        .get("schema_version")
                        .and_then(Json::as_i64)
                        .ok_or("`schema_version` is missing")?,
                    herald_version: text(&map, "herald_version")?,
                }));
            }
            if map.contains_key("table") {
                let columns = map
                    .get("columns")
                    .and_then(Json::as_array)
                    .ok_or("`columns` is missing")?
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_owned)
                            .ok_or("a column name is not text")
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Record::Table {
                    name: text(&map, "table")?,
                    columns,
                });
            }
            if map.contains_key("file") {
                return Ok(Record::File {
                    name: text(&map, "file")?,
                    text: text(&map, "text")?,
                });
            }
            if let Some(end) = map.get("end") {
                let count = |key: &str| {
                    end.get(key)
                        .and_then(Json::as_u64)
                        .ok_or_else(|| format!("`end.{key}` is missing"))
                };
                return Ok(Record::End {
                    tables: count("tables")?,
                    rows: count("rows")?,
                });
            }
            Err("a line of an unknown kind".into())
        }
        _ => Err("a line of an unknown kind".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<bool>().prop_map(Value::Bool),
            ".{0,40}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            (-1e12f64..1e12)
                .prop_filter("not integral", |f| f.fract() != 0.0)
                .prop_map(Value::Real),
        ]
    }

    proptest! {
        #[test]
        fn rows_round_trip(values in proptest::collection::vec(value(), 0..12)) {
            let record = Record::Row(values);
            prop_assert_eq!(decode(&encode(&record)).unwrap(), record);
        }

        #[test]
        fn files_and_tables_round_trip(name in "[a-z_]{1,20}", body in "(?s).{0,200}") {
            for record in [
                Record::File { name: name.clone(), text: body.clone() },
                Record::Table { name: name.clone(), columns: vec![body, name] },
            ] {
                prop_assert_eq!(decode(&encode(&record)).unwrap(), record);
            }
        }

        #[test]
        fn any_line_decodes_or_errs_without_panicking(line in "(?s).{0,120}") {
            let _ = decode(&line);
        }
    }

    #[test]
    fn header_and_end_round_trip_and_a_future_format_is_refused() {
        let header = Record::Header(Header {
            backup_id: "bkp_1".into(),
            created_at: "2030-01-01T00:00:00.000Z".into(),
            backend: "sqlite".into(),
            schema_version: 11,
            herald_version: "0.1.0".into(),
        });
        assert_eq!(decode(&encode(&header)).unwrap(), header);
        let end = Record::End { tables: 3, rows: 9 };
        assert_eq!(decode(&encode(&end)).unwrap(), end);
        let future = encode(&header).replace("\"herald_backup\":1", "\"herald_backup\":2");
        assert!(decode(&future).unwrap_err().contains("not supported"));
        assert!(decode("{\"b64\":1}").is_err());
        assert!(decode("[{\"b64\":\"!!\"}]").is_err());
        assert!(decode("[[1]]").is_err());
    }
}
