//! Typed access to what server-group stages record in their stage context between steps (the
//! durable part of their progress: phases, resolved names, plans, deadlines).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Reads `key` as `T`; `None` when absent or of another shape.
pub fn get<T: DeserializeOwned>(context: &Map<String, Value>, key: &str) -> Option<T> {
    context
        .get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Writes `value` under `key`.
pub fn put<T: Serialize>(context: &mut Map<String, Value>, key: &str, value: &T) {
    if let Ok(v) = serde_json::to_value(value) {
        context.insert(key.to_string(), v);
    }
}
