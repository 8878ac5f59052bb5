//! Row encodings: how applications, executions and stages are split between columns and JSON
//! text, and the canonical JSON used to tell whether a pipeline changed.
//!
//! Every JSON column is TEXT written by `serde_json` (with `preserve_order`), so key order and
//! values come back exactly as written on both backends.

use ferry_core::{Application, Execution, StageDef, StageExecution, Status, StoreError, Trigger};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// `executions.spec`: the parts of an execution written once, at creation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecutionSpec<'a> {
    pub trigger: &'a Trigger,
    pub stage_defs: &'a [StageDef],
}

/// `executions.spec` as read back (the trigger stays a value until the header is assembled).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExecutionSpecRead {
    pub trigger: Value,
    pub stage_defs: Vec<StageDef>,
}

/// Keys of the execution document that are not part of `executions.body`.
const NOT_IN_BODY: [&str; 3] = ["stages", "stageDefs", "trigger"];

/// `executions.body`: the execution's document without its stages, stage definitions and
/// trigger. The header columns (status, times, …) are copies of fields kept here too, for
/// queries; reads take the document from here, so a field added to `Execution` is stored
/// without a schema change. This is on the engine's hot path: the text is written straight from
/// the struct, without building a `Value` and without serializing the stages.
pub(crate) fn execution_body(e: &Execution) -> Result<String, StoreError> {
    to_json(
        "execution body",
        &Without {
            value: e,
            skip: &NOT_IN_BODY,
        },
    )
}

/// Reassembles an execution from `executions.body`, `executions.spec` and its stages.
pub(crate) fn execution_from(
    id: &str,
    body: &str,
    spec: &str,
    stages: Vec<StageExecution>,
) -> Result<Execution, StoreError> {
    let mut doc: Map<String, Value> = from_json(body, || format!("execution {id} body"))?;
    let spec: ExecutionSpecRead = from_json(spec, || format!("execution {id} spec"))?;
    doc.insert("trigger".into(), spec.trigger);
    doc.insert("stageDefs".into(), Value::Array(Vec::new()));
    doc.insert("stages".into(), Value::Array(Vec::new()));
    let mut e: Execution =
        serde_json::from_value(Value::Object(doc)).map_err(|err| StoreError::Corrupt {
            what: format!("execution {id}"),
            message: err.to_string(),
        })?;
    e.stage_defs = spec.stage_defs;
    e.stages = stages;
    Ok(e)
}

/// `applications.body`: the application's document. `created_at` and `updated_at` are read
/// from their columns.
pub(crate) fn application_from(
    body: &str,
    created_at: i64,
    updated_at: i64,
) -> Result<Application, StoreError> {
    let app: Application = from_json(body, || "application".to_string())?;
    Ok(Application {
        created_at,
        updated_at,
        ..app
    })
}

/// Serializes a struct leaving out the named fields (by their serialized names). Meant for
/// serde_json, which ignores the field-count hint of `serialize_struct`.
struct Without<'a, T: ?Sized> {
    value: &'a T,
    skip: &'static [&'static str],
}

impl<T: Serialize + ?Sized> Serialize for Without<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(SkipFields {
            inner: serializer,
            skip: self.skip,
        })
    }
}

/// A serializer that forwards everything to `inner` except the fields of the outermost struct
/// named in `skip`.
struct SkipFields<S> {
    inner: S,
    skip: &'static [&'static str],
}

struct SkipStruct<S> {
    inner: S,
    skip: &'static [&'static str],
}

impl<S: SerializeStruct> SerializeStruct for SkipStruct<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), S::Error> {
        if self.skip.contains(&key) {
            Ok(())
        } else {
            self.inner.serialize_field(key, value)
        }
    }

    fn end(self) -> Result<S::Ok, S::Error> {
        self.inner.end()
    }
}

/// Forwards `Serializer` methods that take plain arguments to the inner serializer.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<$ret, S::Error> {
            self.inner.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for SkipFields<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = S::SerializeSeq;
    type SerializeTuple = S::SerializeTuple;
    type SerializeTupleStruct = S::SerializeTupleStruct;
    type SerializeTupleVariant = S::SerializeTupleVariant;
    type SerializeMap = S::SerializeMap;
    type SerializeStruct = SkipStruct<S::SerializeStruct>;
    type SerializeStructVariant = S::SerializeStructVariant;

    forward! {
        serialize_bool(v: bool) -> S::Ok;
        serialize_i8(v: i8) -> S::Ok;
        serialize_i16(v: i16) -> S::Ok;
        serialize_i32(v: i32) -> S::Ok;
        serialize_i64(v: i64) -> S::Ok;
        serialize_u8(v: u8) -> S::Ok;
        serialize_u16(v: u16) -> S::Ok;
        serialize_u32(v: u32) -> S::Ok;
        serialize_u64(v: u64) -> S::Ok;
        serialize_f32(v: f32) -> S::Ok;
        serialize_f64(v: f64) -> S::Ok;
        serialize_char(v: char) -> S::Ok;
        serialize_str(v: &str) -> S::Ok;
        serialize_bytes(v: &[u8]) -> S::Ok;
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(name: &'static str) -> S::Ok;
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> S::Ok;
        serialize_seq(len: Option<usize>) -> S::SerializeSeq;
        serialize_tuple(len: usize) -> S::SerializeTuple;
        serialize_tuple_struct(name: &'static str, len: usize) -> S::SerializeTupleStruct;
        serialize_tuple_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> S::SerializeTupleVariant;
        serialize_map(len: Option<usize>) -> S::SerializeMap;
        serialize_struct_variant(
            name: &'static str, index: u32, variant: &'static str, len: usize
        ) -> S::SerializeStructVariant;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(v)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, v)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner
            .serialize_newtype_variant(name, index, variant, v)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Ok(SkipStruct {
            inner: self.inner.serialize_struct(name, len)?,
            skip: self.skip,
        })
    }
}

fn encode_error(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: format!("could not be encoded: {e}"),
    }
}

/// Serializes a value for a JSON column.
pub(crate) fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, StoreError> {
    // Serializing these types cannot fail (string keys only); should it, nothing was written.
    serde_json::to_string(value).map_err(|e| encode_error(what, e))
}

/// Reads a JSON column; a failure means the row is corrupt (or from an incompatible version).
/// `what` names the column for the error and is only called on failure.
pub(crate) fn from_json<'de, T: Deserialize<'de>>(
    text: &'de str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what(),
        message: e.to_string(),
    })
}

/// Reads a status column.
pub(crate) fn status(s: &str, what: impl FnOnce() -> String) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: what(),
        message: format!("unknown status \"{s}\""),
    })
}

/// The canonical text of a JSON value: object keys sorted at every level, no whitespace. Two
/// documents that differ only in key order have the same canonical text.
pub(crate) fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_ignores_key_order_only() {
        let a = json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, {"p": 3, "q": 2}]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"p":3,"q":2}]},"b":1}"#
        );
        let c = json!({"a": {"x": "s", "y": [{"p": 3, "q": 2}, 1]}, "b": 1});
        assert_ne!(
            canonical_json(&a),
            canonical_json(&c),
            "array order matters"
        );
        assert_ne!(canonical_json(&json!(1)), canonical_json(&json!(1.0)));
        assert_eq!(canonical_json(&json!("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn bad_rows_are_corrupt() {
        let err = from_json::<Value>("{", || "execution e1 spec".into()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { ref what, .. } if what == "execution e1 spec"));
        let err = status("DONE", || "stage e1/0 status".into()).unwrap_err();
        assert!(err.to_string().contains("unknown status \"DONE\""), "{err}");
        assert_eq!(status("RUNNING", String::new).unwrap(), Status::Running);
    }

    #[test]
    fn execution_body_leaves_out_stages_and_spec() {
        let mut e = crate::testkit::sample_execution("app", "p", "e1", 1_000);
        e.stages[0].context.insert("z".into(), json!(0.1));
        let body = execution_body(&e).unwrap();
        for key in ["\"stages\"", "\"stageDefs\"", "\"trigger\""] {
            assert!(!body.contains(key), "{key} in {body}");
        }
        assert!(body.contains("\"pipelineConfigId\":\"p\""), "{body}");
        let mut via_value = serde_json::to_value(&e).unwrap();
        for key in NOT_IN_BODY {
            via_value.as_object_mut().unwrap().shift_remove(key);
        }
        assert_eq!(
            body,
            via_value.to_string(),
            "same text as removing the keys from the value"
        );
        let spec = to_json(
            "spec",
            &ExecutionSpec {
                trigger: &e.trigger,
                stage_defs: &e.stage_defs,
            },
        )
        .unwrap();
        let back = execution_from("e1", &body, &spec, e.stages.clone()).unwrap();
        assert_eq!(back, e);
        let err = execution_from("e1", "{}", &spec, vec![]).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref what, .. } if what == "execution e1"),
            "{err}"
        );
    }

    #[test]
    fn application_timestamps_come_from_the_columns() {
        let app = Application {
            name: "shop".into(),
            email: None,
            description: Some("d".into()),
            owners: vec!["ann".into()],
            created_at: 0,
            updated_at: 0,
        };
        let body = to_json("app", &app).unwrap();
        let back = application_from(&body, 5, 6).unwrap();
        assert_eq!((back.created_at, back.updated_at), (5, 6));
        assert_eq!(
            Application {
                created_at: 0,
                updated_at: 0,
                ..back
            },
            app
        );
    }
}
