//! Value semantics shared by operators, methods and helpers: type names, numbers, equality,
//! ordering, copy cost and size-limited JSON output. All walks over values are iterative, so
//! deeply nested data cannot overflow the stack.

use std::cmp::Ordering;
use std::io;

use serde_json::Value;

use crate::eval::BYTES_PER_STEP;

/// A number as arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Reads a JSON number; unsigned values beyond `i64` become floats.
pub(crate) fn as_num(v: &Value) -> Option<Num> {
    let Value::Number(n) = v else { return None };
    number(n)
}

fn number(n: &serde_json::Number) -> Option<Num> {
    if let Some(i) = n.as_i64() {
        Some(Num::Int(i))
    } else {
        n.as_f64().map(Num::Float)
    }
}

/// Makes a JSON number; `None` when a float is not finite.
pub(crate) fn num_to_value(n: Num) -> Option<Value> {
    match n {
        Num::Int(i) => Some(Value::from(i)),
        Num::Float(f) => serde_json::Number::from_f64(f).map(Value::Number),
    }
}

/// "a string", "a list", ... for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The type and a short rendering of a value, e.g. `the string 'yes'`, for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string '{}'", crate::error::shorten(s, 40)),
        Value::Array(a) => format!("a list of {} elements", a.len()),
        Value::Object(m) => format!("a map with {} keys", m.len()),
    }
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (number(a), number(b)) {
        (Some(Num::Int(x)), Some(Num::Int(y))) => x == y,
        (Some(x), Some(y)) => x.as_f64() == y.as_f64(),
        _ => false,
    }
}

/// Deep equality where `1 == 1.0`, values of different JSON types are unequal, and maps compare
/// regardless of key order. Returns the result and the number of nodes compared; stops early
/// (returning `false`) once more than `budget` nodes were compared.
pub(crate) fn deep_eq(a: &Value, b: &Value, budget: u64) -> (bool, u64) {
    let mut cost = 0u64;
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        cost += 1;
        if cost > budget {
            return (false, cost);
        }
        let same = match (a, b) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Number(x), Value::Number(y)) => num_eq(x, y),
            (Value::String(x), Value::String(y)) => {
                cost += (x.len() / BYTES_PER_STEP) as u64;
                x == y
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                stack.extend(x.iter().zip(y.iter()));
                true
            }
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    false
                } else {
                    let mut ok = true;
                    for (k, xv) in x {
                        match y.get(k) {
                            Some(yv) => stack.push((xv, yv)),
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    ok
                }
            }
            _ => false,
        };
        if !same {
            return (false, cost);
        }
    }
    (true, cost)
}

/// Ordering for `< <= > >=`: numbers numerically, strings lexically, booleans false < true.
/// `None` for anything else (including null and mixed types).
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => match (as_num(a)?, as_num(b)?) {
            (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
            (x, y) => x.as_f64().partial_cmp(&y.as_f64()),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Cost of copying a value: one per node plus one per 64 bytes of text (keys included).
/// Stops counting once the cost exceeds `budget`.
pub(crate) fn copy_cost(v: &Value, budget: u64) -> u64 {
    let mut cost = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        cost += 1;
        match v {
            Value::String(s) => cost += (s.len() / BYTES_PER_STEP) as u64,
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(m) => {
                for (k, x) in m {
                    cost += (k.len() / BYTES_PER_STEP) as u64;
                    stack.push(x);
                }
            }
            _ => {}
        }
        if cost > budget {
            return cost;
        }
    }
    cost
}

/// A writer that fails once more than `limit` bytes were written.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            return Err(io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compact JSON text of `v`, or `None` if it would be longer than `limit` bytes.
pub(crate) fn to_json_limited(v: &Value, limit: usize) -> Option<String> {
    let mut w = LimitedWriter {
        buf: Vec::new(),
        limit,
    };
    serde_json::to_writer(&mut w, v).ok()?;
    String::from_utf8(w.buf).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equality_is_numeric_and_order_insensitive_for_maps() {
        let cases = [
            (json!(1), json!(1.0), true),
            (json!(1), json!("1"), false),
            (json!(null), json!(null), true),
            (
                json!({"a": 1, "b": [1, 2]}),
                json!({"b": [1, 2.0], "a": 1}),
                true,
            ),
            (json!({"a": 1}), json!({"a": 1, "b": 2}), false),
            (json!([1, 2]), json!([2, 1]), false),
            (json!(u64::MAX), json!(u64::MAX), true),
        ];
        for (a, b, want) in cases {
            assert_eq!(deep_eq(&a, &b, u64::MAX).0, want, "{a} == {b}");
        }
        assert!(!deep_eq(&json!([1, 2, 3]), &json!([1, 2, 3]), 2).0);
    }

    #[test]
    fn ordering_only_for_like_types() {
        assert_eq!(compare(&json!(1), &json!(1.5)), Some(Ordering::Less));
        assert_eq!(compare(&json!("b"), &json!("a")), Some(Ordering::Greater));
        assert_eq!(compare(&json!(false), &json!(true)), Some(Ordering::Less));
        assert_eq!(compare(&json!("1"), &json!(1)), None);
        assert_eq!(compare(&json!(null), &json!(1)), None);
    }

    #[test]
    fn copy_cost_counts_nodes_and_text() {
        assert_eq!(copy_cost(&json!([1, 2, {"a": null}]), u64::MAX), 5);
        assert_eq!(copy_cost(&json!("x".repeat(640)), u64::MAX), 11);
        assert!(copy_cost(&json!([1, 2, 3, 4, 5]), 2) > 2);
    }

    #[test]
    fn json_output_is_limited() {
        assert_eq!(
            to_json_limited(&json!({"a": [1]}), 100).as_deref(),
            Some(r#"{"a":[1]}"#)
        );
        assert_eq!(to_json_limited(&json!({"a": [1]}), 5), None);
    }

    #[test]
    fn deep_values_do_not_overflow() {
        let mut v = json!(1);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(deep_eq(&v, &v, u64::MAX).0);
        assert!(copy_cost(&v, u64::MAX) > 100_000);
        // Dropping such a value recursively would overflow; leak it deliberately in the test.
        std::mem::forget(v);
    }
}
