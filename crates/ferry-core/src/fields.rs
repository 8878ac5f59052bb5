//! Path-aware reading of JSON objects that records a problem for every wrong field instead of
//! stopping at the first, the way every Ferry document is validated.

use crate::problem::{Problem, join_path};
use serde_json::{Map, Value};

/// Reads typed fields out of one JSON object, collecting problems with their paths.
pub struct Fields<'a> {
    obj: Option<&'a Map<String, Value>>,
    path: String,
    /// When true, a string holding `${...}` is accepted for any field (its type is only known
    /// after evaluation): typed readers return `None` for it without a problem.
    lenient: bool,
    /// Problems found so far, shared with the caller.
    pub problems: &'a mut Vec<Problem>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value` at `path`. A value that is not an object records a problem and
    /// every later read yields nothing.
    pub fn new(value: &'a Value, path: &str, problems: &'a mut Vec<Problem>) -> Self {
        let obj = value.as_object();
        if obj.is_none() {
            problems.push(Problem::new(
                path,
                format!("must be an object, found {}", kind(value)),
            ));
        }
        Fields {
            obj,
            path: path.to_string(),
            lenient: false,
            problems,
        }
    }

    /// Like [`Fields::new`], but accepts expression strings in every field (pre-run validation).
    pub fn lenient(value: &'a Value, path: &str, problems: &'a mut Vec<Problem>) -> Self {
        let mut f = Fields::new(value, path, problems);
        f.lenient = true;
        f
    }

    /// Whether expression strings are accepted for any field.
    pub fn is_lenient(&self) -> bool {
        self.lenient
    }

    /// A child reader for a nested object field, in the same mode.
    pub fn child(&mut self, key: &str) -> Option<Fields<'_>> {
        let v = self.get(key)?;
        let path = self.path_of(key);
        let lenient = self.lenient;
        let mut f = Fields::new(v, &path, self.problems);
        f.lenient = lenient;
        Some(f)
    }

    /// True when the field holds an expression that is only resolved at run time
    /// (only in lenient mode).
    pub fn is_deferred(&self, key: &str) -> bool {
        self.lenient
            && self
                .obj
                .and_then(|o| o.get(key))
                .and_then(Value::as_str)
                .is_some_and(crate::looks_like_expression)
    }

    /// The path of a child field.
    pub fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// The raw value of a field, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(key)).filter(|v| !v.is_null())
    }

    /// Records a problem at a child field.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path_of(key);
        self.problems.push(Problem::new(path, message));
    }

    /// A required non-empty string.
    pub fn required_str(&mut self, key: &str) -> Option<String> {
        if self.is_deferred(key) {
            return None;
        }
        match self.get(key) {
            None => {
                self.problem(key, "is required");
                None
            }
            Some(v) => self.str_value(key, v).and_then(|s| {
                if s.trim().is_empty() {
                    self.problem(key, "must not be empty");
                    None
                } else {
                    Some(s)
                }
            }),
        }
    }

    /// An optional floating-point number. Numeric strings are accepted.
    pub fn opt_f64(&mut self, key: &str) -> Option<f64> {
        if self.is_deferred(key) {
            return None;
        }
        match self.get(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    self.problem(key, format!("must be a number, found \"{s}\""));
                    None
                }
            },
            other => {
                let msg = format!("must be a number, found {}", kind(other));
                self.problem(key, msg);
                None
            }
        }
    }

    /// An optional object.
    pub fn opt_object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        if self.is_deferred(key) {
            return None;
        }
        match self.get(key)? {
            Value::Object(o) => Some(o),
            other => {
                let msg = format!("must be an object, found {}", kind(other));
                self.problem(key, msg);
                None
            }
        }
    }

    /// An optional string. Numbers are accepted and turned into strings, because Spinnaker
    /// documents often write ids such as `refId: 1`.
    pub fn opt_str(&mut self, key: &str) -> Option<String> {
        let v = self.get(key)?;
        self.str_value(key, v)
    }

    fn str_value(&mut self, key: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.problem(key, format!("must be a string, found {}", kind(other)));
                None
            }
        }
    }

    /// An optional boolean, with a default. The strings "true"/"false" are accepted.
    pub fn bool_or(&mut self, key: &str, default: bool) -> bool {
        if self.is_deferred(key) {
            return default;
        }
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" => false,
            Some(other) => {
                let msg = format!("must be a boolean, found {}", kind(other));
                self.problem(key, msg);
                default
            }
        }
    }

    /// An optional non-negative integer. Numeric strings are accepted.
    pub fn opt_u64(&mut self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Number(n) => match n.as_u64() {
                Some(v) => Some(v),
                None => {
                    self.problem(key, "must be a non-negative integer");
                    None
                }
            },
            Value::String(s) => match s.trim().parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) if self.lenient && crate::looks_like_expression(s) => None,
                Err(_) => {
                    self.problem(
                        key,
                        format!("must be a non-negative integer, found \"{s}\""),
                    );
                    None
                }
            },
            other => {
                let msg = format!("must be a non-negative integer, found {}", kind(other));
                self.problem(key, msg);
                None
            }
        }
    }

    /// An optional array.
    pub fn opt_array(&mut self, key: &str) -> Option<&'a Vec<Value>> {
        if self.is_deferred(key) {
            return None;
        }
        match self.get(key)? {
            Value::Array(a) => Some(a),
            other => {
                let msg = format!("must be a list, found {}", kind(other));
                self.problem(key, msg);
                None
            }
        }
    }

    /// An optional list of strings (numbers become strings).
    pub fn string_list(&mut self, key: &str) -> Vec<String> {
        let Some(items) = self.opt_array(key) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                other => {
                    let msg = format!("must be a string, found {}", kind(other));
                    self.problem(&format!("{key}[{i}]"), msg);
                }
            }
        }
        out
    }
}

/// A short name for a JSON value's type, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
