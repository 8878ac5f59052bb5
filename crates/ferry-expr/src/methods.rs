//! Methods on values: the Java `String`, `List` and `Map` methods pipelines use, and nothing
//! else. There is no reflection: a method exists only if it is in one of the tables below, so
//! `getClass()`, `forName()` and friends are unknown names, rejected at parse time.

use std::borrow::Cow;

use serde_json::Value;

use crate::ast::Span;
use crate::error::EvalError;
use crate::eval::Evaluator;
use crate::regex_util::{self, ReplaceError};
use crate::value::{self, Num};

const STRING_METHODS: &[&str] = &[
    "charAt",
    "contains",
    "endsWith",
    "equals",
    "equalsIgnoreCase",
    "indexOf",
    "isEmpty",
    "lastIndexOf",
    "length",
    "matches",
    "replace",
    "replaceAll",
    "replaceFirst",
    "split",
    "startsWith",
    "substring",
    "toLowerCase",
    "toString",
    "toUpperCase",
    "trim",
];
const STRING_METHODS_TEXT: &str = "charAt, contains, endsWith, equals, equalsIgnoreCase, indexOf, isEmpty, lastIndexOf, length, matches, replace, replaceAll, replaceFirst, split, startsWith, substring, toLowerCase, toString, toUpperCase, trim";

const LIST_METHODS: &[&str] = &[
    "contains", "equals", "get", "indexOf", "isEmpty", "size", "toString",
];
const LIST_METHODS_TEXT: &str = "contains, equals, get, indexOf, isEmpty, size, toString";

const MAP_METHODS: &[&str] = &[
    "containsKey",
    "containsValue",
    "equals",
    "get",
    "isEmpty",
    "keySet",
    "size",
    "toString",
    "values",
];
const MAP_METHODS_TEXT: &str =
    "containsKey, containsValue, equals, get, isEmpty, keySet, size, toString, values";

const SCALAR_METHODS_TEXT: &str = "equals, toString";

/// True if any value type has a method called `name`.
pub(crate) fn is_known_method(name: &str) -> bool {
    STRING_METHODS.contains(&name) || LIST_METHODS.contains(&name) || MAP_METHODS.contains(&name)
}

/// Every method name, sorted, comma-separated (for error messages).
pub(crate) fn all_method_names() -> String {
    let mut all: Vec<&str> = STRING_METHODS
        .iter()
        .chain(LIST_METHODS)
        .chain(MAP_METHODS)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    all.join(", ")
}

type Args<'a, 'v> = &'a [Cow<'v, Value>];

impl Evaluator<'_> {
    fn bad_args(&self, name: &str, message: String, span: Span) -> EvalError {
        EvalError::Arguments {
            callee: format!("'{name}'"),
            message,
            at: self.loc(span),
        }
    }

    fn arity(
        &self,
        name: &str,
        args: Args<'_, '_>,
        min: usize,
        max: usize,
        span: Span,
    ) -> Result<(), EvalError> {
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (a, b) if a == b => format!("{a}"),
                (a, b) => format!("{a} to {b}"),
            };
            return Err(self.bad_args(
                name,
                format!("takes {expected} argument(s), got {}", args.len()),
                span,
            ));
        }
        Ok(())
    }

    fn str_arg<'a>(
        &self,
        name: &str,
        args: Args<'a, '_>,
        i: usize,
        span: Span,
    ) -> Result<&'a str, EvalError> {
        match args.get(i).map(|a| &**a) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.bad_args(
                name,
                format!(
                    "argument {} must be a string, not {}",
                    i + 1,
                    value::describe(other)
                ),
                span,
            )),
            None => Err(self.bad_args(name, format!("argument {} is missing", i + 1), span)),
        }
    }

    fn int_arg(
        &self,
        name: &str,
        args: Args<'_, '_>,
        i: usize,
        span: Span,
    ) -> Result<i64, EvalError> {
        match args.get(i).map(|a| &**a) {
            Some(v) => match value::as_num(v) {
                Some(Num::Int(n)) => Ok(n),
                _ => Err(self.bad_args(
                    name,
                    format!(
                        "argument {} must be an integer, not {}",
                        i + 1,
                        value::describe(v)
                    ),
                    span,
                )),
            },
            None => Err(self.bad_args(name, format!("argument {} is missing", i + 1), span)),
        }
    }

    fn arg<'a>(
        &self,
        name: &str,
        args: Args<'a, '_>,
        i: usize,
        span: Span,
    ) -> Result<&'a Value, EvalError> {
        args.get(i)
            .map(|a| &**a)
            .ok_or_else(|| self.bad_args(name, format!("argument {} is missing", i + 1), span))
    }

    /// Calls `target.name(args)`. `target` is not null (the caller handles `?.`).
    pub(crate) fn call_method<'v>(
        &mut self,
        target: Cow<'v, Value>,
        name: &str,
        args: Args<'_, '_>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        match name {
            "toString" => {
                self.arity(name, args, 0, 0, span)?;
                let s = self.text(&target, "null", span)?.into_owned();
                return Ok(Cow::Owned(Value::String(s)));
            }
            "equals" => {
                self.arity(name, args, 1, 1, span)?;
                let other = self.arg(name, args, 0, span)?;
                let budget = self.limits.max_steps;
                let (eq, cost) = value::deep_eq(&target, other, budget);
                self.charge(cost, span)?;
                return Ok(Cow::Owned(Value::Bool(eq)));
            }
            _ => {}
        }
        match &*target {
            Value::String(s) => self.string_method(s, name, args, span).map(Cow::Owned),
            Value::Array(_) => self.list_method(target, name, args, span),
            Value::Object(_) => self.map_method(target, name, args, span),
            other => Err(EvalError::NoSuchMethod {
                name: name.to_string(),
                type_name: value::type_name(other),
                known: SCALAR_METHODS_TEXT,
                at: self.loc(span),
            }),
        }
    }

    fn string_method(
        &mut self,
        s: &str,
        name: &str,
        args: Args<'_, '_>,
        span: Span,
    ) -> Result<Value, EvalError> {
        let limit = self.limits.max_output_bytes;
        // Every string method reads the string at least once (counting characters, scanning,
        // copying): pay for that up front.
        self.charge_bytes(s.len(), span)?;
        let v = match name {
            "contains" | "startsWith" | "endsWith" => {
                self.arity(name, args, 1, 1, span)?;
                let needle = self.str_arg(name, args, 0, span)?;
                Value::Bool(match name {
                    "contains" => s.contains(needle),
                    "startsWith" => s.starts_with(needle),
                    _ => s.ends_with(needle),
                })
            }
            "toLowerCase" | "toUpperCase" => {
                self.arity(name, args, 0, 0, span)?;
                let out = if name == "toLowerCase" {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                };
                self.check_len(out.len(), span)?;
                Value::String(out)
            }
            "trim" => {
                self.arity(name, args, 0, 0, span)?;
                // Java trims every character up to and including U+0020.
                Value::String(s.trim_matches(|c: char| c <= ' ').to_string())
            }
            "length" => {
                self.arity(name, args, 0, 0, span)?;
                Value::from(s.chars().count())
            }
            "isEmpty" => {
                self.arity(name, args, 0, 0, span)?;
                Value::Bool(s.is_empty())
            }
            "equalsIgnoreCase" => {
                self.arity(name, args, 1, 1, span)?;
                match self.arg(name, args, 0, span)? {
                    Value::String(o) => Value::Bool(s.to_lowercase() == o.to_lowercase()),
                    _ => Value::Bool(false),
                }
            }
            "substring" => {
                self.arity(name, args, 1, 2, span)?;
                let len = s.chars().count();
                let begin = self.int_arg(name, args, 0, span)?;
                let end = if args.len() == 2 {
                    self.int_arg(name, args, 1, span)?
                } else {
                    len as i64
                };
                let (Ok(b), Ok(e)) = (usize::try_from(begin), usize::try_from(end)) else {
                    return Err(self.bad_args(
                        name,
                        format!("range {begin}..{end} is out of bounds for length {len}"),
                        span,
                    ));
                };
                if b > e || e > len {
                    return Err(self.bad_args(
                        name,
                        format!("range {begin}..{end} is out of bounds for length {len}"),
                        span,
                    ));
                }
                Value::String(s.chars().skip(b).take(e - b).collect())
            }
            "charAt" => {
                self.arity(name, args, 1, 1, span)?;
                let len = s.chars().count();
                let i = self.list_index(self.arg(name, args, 0, span)?, len, "a string", span)?;
                Value::String(s.chars().nth(i).map(String::from).unwrap_or_default())
            }
            "indexOf" | "lastIndexOf" => {
                self.arity(name, args, 1, 1, span)?;
                let needle = self.str_arg(name, args, 0, span)?;
                let found = if name == "indexOf" {
                    s.find(needle)
                } else {
                    s.rfind(needle)
                };
                match found {
                    Some(b) => Value::from(s.get(..b).map_or(0, |p| p.chars().count())),
                    None => Value::from(-1),
                }
            }
            "matches" => {
                self.arity(name, args, 1, 1, span)?;
                let pattern = self.str_arg(name, args, 0, span)?;
                let re = self.regex(pattern, true, span)?;
                Value::Bool(re.is_match(s))
            }
            "replace" => {
                self.arity(name, args, 2, 2, span)?;
                let from = self.str_arg(name, args, 0, span)?;
                let to = self.str_arg(name, args, 1, span)?;
                let count = if from.is_empty() {
                    s.chars().count() + 1
                } else {
                    s.matches(from).count()
                };
                let len = s
                    .len()
                    .saturating_sub(count.saturating_mul(from.len()))
                    .saturating_add(count.saturating_mul(to.len()));
                self.check_len(len, span)?;
                self.charge_bytes(s.len().saturating_add(len), span)?;
                Value::String(s.replace(from, to))
            }
            "replaceAll" | "replaceFirst" => {
                self.arity(name, args, 2, 2, span)?;
                let pattern = self.str_arg(name, args, 0, span)?;
                let repl = self.str_arg(name, args, 1, span)?;
                let re = self.regex(pattern, false, span)?;
                let out = regex_util::replace(&re, s, repl, name == "replaceAll", limit).map_err(
                    |e| match e {
                        ReplaceError::Limit => EvalError::OutputLimit {
                            limit,
                            at: self.loc(span),
                        },
                        ReplaceError::Bad(m) => {
                            self.bad_args(name, format!("invalid replacement '{repl}': {m}"), span)
                        }
                    },
                )?;
                self.charge_bytes(s.len().saturating_add(out.len()), span)?;
                Value::String(out)
            }
            "split" => {
                self.arity(name, args, 1, 1, span)?;
                let pattern = self.str_arg(name, args, 0, span)?;
                let re = self.regex(pattern, false, span)?;
                let parts = regex_util::split(&re, s);
                self.charge(parts.len() as u64, span)?;
                Value::Array(
                    parts
                        .into_iter()
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                )
            }
            _ => {
                return Err(EvalError::NoSuchMethod {
                    name: name.to_string(),
                    type_name: "a string",
                    known: STRING_METHODS_TEXT,
                    at: self.loc(span),
                });
            }
        };
        Ok(v)
    }

    /// Position of `needle` in `items` (deep equality), paying per element compared.
    fn position(
        &mut self,
        items: &[Value],
        needle: &Value,
        span: Span,
    ) -> Result<Option<usize>, EvalError> {
        for (i, item) in items.iter().enumerate() {
            let (eq, cost) = value::deep_eq(item, needle, self.limits.max_steps);
            self.charge(cost, span)?;
            if eq {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn list_method<'v>(
        &mut self,
        target: Cow<'v, Value>,
        name: &str,
        args: Args<'_, '_>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let Value::Array(items) = &*target else {
            return Ok(Cow::Owned(Value::Null));
        };
        let v = match name {
            "size" => {
                self.arity(name, args, 0, 0, span)?;
                Value::from(items.len())
            }
            "isEmpty" => {
                self.arity(name, args, 0, 0, span)?;
                Value::Bool(items.is_empty())
            }
            "contains" => {
                self.arity(name, args, 1, 1, span)?;
                let needle = self.arg(name, args, 0, span)?;
                Value::Bool(self.position(items, needle, span)?.is_some())
            }
            "indexOf" => {
                self.arity(name, args, 1, 1, span)?;
                let needle = self.arg(name, args, 0, span)?;
                match self.position(items, needle, span)? {
                    Some(i) => Value::from(i),
                    None => Value::from(-1),
                }
            }
            "get" => {
                self.arity(name, args, 1, 1, span)?;
                let idx = self.arg(name, args, 0, span)?;
                let i = self.list_index(idx, items.len(), "a list", span)?;
                return Ok(match target {
                    Cow::Borrowed(Value::Array(items)) => {
                        items.get(i).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                    }
                    Cow::Owned(Value::Array(mut items)) if i < items.len() => {
                        Cow::Owned(items.swap_remove(i))
                    }
                    _ => Cow::Owned(Value::Null),
                });
            }
            _ => {
                return Err(EvalError::NoSuchMethod {
                    name: name.to_string(),
                    type_name: "a list",
                    known: LIST_METHODS_TEXT,
                    at: self.loc(span),
                });
            }
        };
        Ok(Cow::Owned(v))
    }

    fn map_key<'a>(
        &self,
        name: &str,
        args: Args<'a, '_>,
        span: Span,
    ) -> Result<Cow<'a, str>, EvalError> {
        match self.arg(name, args, 0, span)? {
            Value::String(s) => Ok(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Ok(Cow::Owned(n.to_string())),
            Value::Bool(b) => Ok(Cow::Owned(b.to_string())),
            other => Err(self.bad_args(
                name,
                format!("a map key must be a string, not {}", value::describe(other)),
                span,
            )),
        }
    }

    fn map_method<'v>(
        &mut self,
        target: Cow<'v, Value>,
        name: &str,
        args: Args<'_, '_>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let Value::Object(m) = &*target else {
            return Ok(Cow::Owned(Value::Null));
        };
        let v = match name {
            "size" => {
                self.arity(name, args, 0, 0, span)?;
                Value::from(m.len())
            }
            "isEmpty" => {
                self.arity(name, args, 0, 0, span)?;
                Value::Bool(m.is_empty())
            }
            "containsKey" => {
                self.arity(name, args, 1, 1, span)?;
                let key = self.map_key(name, args, span)?;
                Value::Bool(m.contains_key(&*key))
            }
            "containsValue" => {
                self.arity(name, args, 1, 1, span)?;
                let needle = self.arg(name, args, 0, span)?;
                let mut found = false;
                for v in m.values() {
                    let (eq, cost) = value::deep_eq(v, needle, self.limits.max_steps);
                    self.charge(cost, span)?;
                    if eq {
                        found = true;
                        break;
                    }
                }
                Value::Bool(found)
            }
            "keySet" => {
                self.arity(name, args, 0, 0, span)?;
                let keys: Vec<Value> = m.keys().map(|k| Value::String(k.clone())).collect();
                let out = Value::Array(keys);
                self.charge_copy(&out, span)?;
                out
            }
            "values" => {
                self.arity(name, args, 0, 0, span)?;
                let mut out = Vec::with_capacity(m.len());
                for v in m.values() {
                    self.charge_copy(v, span)?;
                    out.push(v.clone());
                }
                Value::Array(out)
            }
            "get" => {
                self.arity(name, args, 1, 1, span)?;
                let key = self.map_key(name, args, span)?.into_owned();
                return Ok(match target {
                    Cow::Borrowed(Value::Object(m)) => {
                        m.get(&key).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                    }
                    Cow::Owned(Value::Object(mut m)) => {
                        Cow::Owned(m.remove(&key).unwrap_or(Value::Null))
                    }
                    _ => Cow::Owned(Value::Null),
                });
            }
            _ => {
                return Err(EvalError::NoSuchMethod {
                    name: name.to_string(),
                    type_name: "a map",
                    known: MAP_METHODS_TEXT,
                    at: self.loc(span),
                });
            }
        };
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_tables_match_their_text() {
        assert_eq!(STRING_METHODS.join(", "), STRING_METHODS_TEXT);
        assert_eq!(LIST_METHODS.join(", "), LIST_METHODS_TEXT);
        assert_eq!(MAP_METHODS.join(", "), MAP_METHODS_TEXT);
        assert!(is_known_method("substring"));
        assert!(is_known_method("keySet"));
        for banned in [
            "getClass",
            "forName",
            "exec",
            "getRuntime",
            "invoke",
            "newInstance",
            "wait",
            "notify",
            "hashCode",
        ] {
            assert!(!is_known_method(banned), "{banned}");
        }
        assert!(all_method_names().starts_with("charAt, contains, containsKey"));
    }
}
