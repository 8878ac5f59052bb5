//! Evaluating and checking every template string inside a JSON tree (a stage context, a
//! pipeline), collecting every problem with the JSON path of its field.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Map, Value};

use crate::error::{FieldError, shorten};
use crate::eval::{EvalContext, Limits};
use crate::template::{Template, contains_expression};

/// Longest expression text kept in a [`FieldError`].
const MAX_ERROR_EXPRESSION: usize = 500;

/// How many times `max_steps` one [`evaluate_tree`] call may use across all its fields.
pub const TREE_STEP_FACTOR: u64 = 10;

/// Evaluate every string inside a JSON tree that contains `${`. Errors carry the JSON path of
/// the field (e.g. `payload.items[2].name`) and the expression text. On error the original text
/// stays in place (Spinnaker's behaviour) and evaluation continues with the other fields; all
/// errors are returned. Map keys are not evaluated.
///
/// Each field may use `max_steps`; the whole tree may use [`TREE_STEP_FACTOR`] times that.
/// Once the tree's budget is spent, the remaining fields are left as they are and reported.
pub fn evaluate_tree(value: &Value, ctx: &EvalContext<'_>) -> (Value, Vec<FieldError>) {
    let mut errors = Vec::new();
    let mut path = String::new();
    let budget = ctx.limits.max_steps.saturating_mul(TREE_STEP_FACTOR);
    let mut used = 0u64;
    let out = walk(value, &mut path, &mut errors, &mut |s, path, errors| {
        let result = if used >= budget {
            Err((
                shorten(s, MAX_ERROR_EXPRESSION),
                format!(
                    "not evaluated: the expressions in this tree used more than {budget} steps in total"
                ),
            ))
        } else {
            evaluate_field(s, ctx, &mut used)
        };
        match result {
            Ok(v) => v,
            Err(e) => {
                errors.push(FieldError {
                    path: path.to_string(),
                    expression: e.0,
                    message: e.1,
                });
                Value::String(s.to_string())
            }
        }
    });
    (out, errors)
}

/// Parse-check every string in a tree (for validating pipelines before they run): every
/// problem with its path. Uses default [`Limits`].
pub fn check_tree(value: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut path = String::new();
    let limits = Limits::default();
    walk(value, &mut path, &mut errors, &mut |s, path, errors| {
        if let Err((e, range)) = Template::parse_detailed(s, &limits) {
            errors.push(FieldError {
                path: path.to_string(),
                expression: excerpt(s, range),
                message: e.to_string(),
            });
        }
        Value::Null
    });
    errors
}

/// The text of the failing `${...}`, shortened.
fn excerpt(s: &str, range: Range<usize>) -> String {
    shorten(s.get(range).unwrap_or(s), MAX_ERROR_EXPRESSION)
}

/// Parses and evaluates one field, adding its steps to `used`; on error returns (expression
/// text, message).
fn evaluate_field(
    s: &str,
    ctx: &EvalContext<'_>,
    used: &mut u64,
) -> Result<Value, (String, String)> {
    let t = Template::parse_detailed(s, &ctx.limits)
        .map_err(|(e, r)| (excerpt(s, r), e.to_string()))?;
    t.evaluate_counted(ctx, used)
        .map_err(|(e, r)| (excerpt(s, r), e.to_string()))
}

/// Appends a map key to a path: `a.b` for plain names, `a['x.y']` otherwise.
fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str("['");
        path.push_str(&key.replace('\'', "''"));
        path.push_str("']");
    }
}

type Visit<'f> = dyn FnMut(&str, &str, &mut Vec<FieldError>) -> Value + 'f;

/// Rebuilds `v`, replacing each string containing `${` with `visit(string, path, errors)`.
fn walk(
    v: &Value,
    path: &mut String,
    errors: &mut Vec<FieldError>,
    visit: &mut Visit<'_>,
) -> Value {
    match v {
        Value::String(s) if contains_expression(s) => visit(s, path, errors),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                out.push(walk(item, path, errors, visit));
                path.truncate(len);
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, item) in m {
                let len = path.len();
                push_key(path, k);
                out.insert(k.clone(), walk(item, path, errors, visit));
                path.truncate(len);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::host::NullHost;

    #[test]
    fn evaluates_fields_and_reports_every_error_with_its_path() {
        let root = json!({"parameters": {"env": "prod", "n": 2}});
        let ctx = EvalContext::new(&root, &NullHost);
        let tree = json!({
            "name": "deploy-${parameters.env}",
            "count": "${parameters.n * 2}",
            "payload": {"items": [1, "x", {"name": "${nope}"}], "deploy.server.groups": "${1/0}"},
            "script": "echo ${HOME} and ${parameters.env}",
            "bad": "${ 'unclosed }",
            "plain": "no expressions $ {x}",
            "n": 5,
            "${notAKey}": true
        });
        let (out, errors) = evaluate_tree(&tree, &ctx);
        assert_eq!(out["name"], json!("deploy-prod"));
        assert_eq!(out["count"], json!(4));
        assert_eq!(out["payload"]["items"][2]["name"], json!("${nope}"));
        assert_eq!(out["script"], tree["script"]);
        assert_eq!(out["plain"], tree["plain"]);
        assert_eq!(out["n"], json!(5));
        assert_eq!(out["${notAKey}"], json!(true));
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.expression.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("payload.items[2].name", "${nope}"),
                ("payload['deploy.server.groups']", "${1/0}"),
                ("script", "${HOME}"),
                ("bad", "${ 'unclosed }"),
            ]
        );
        assert!(
            errors[0].message.contains("unknown name 'nope'"),
            "{}",
            errors[0].message
        );
        assert!(errors[1].message.contains("division by zero"));
        assert!(errors[3].message.contains("not closed"));
    }

    #[test]
    fn a_top_level_string_has_an_empty_path() {
        let root = json!({});
        let ctx = EvalContext::new(&root, &NullHost);
        let (out, errors) = evaluate_tree(&json!("${x}"), &ctx);
        assert_eq!(out, json!("${x}"));
        assert_eq!(errors[0].path, "");
        let (out, errors) = evaluate_tree(&json!(["${1+1}", "${'it''s'}"]), &ctx);
        assert_eq!(out, json!([2, "it's"]));
        assert!(errors.is_empty());
    }

    #[test]
    fn the_whole_tree_shares_a_step_budget() {
        let root = json!({"l": (0..300).collect::<Vec<_>>()});
        let mut ctx = EvalContext::new(&root, &NullHost);
        ctx.limits.max_steps = 2_000;
        // Each field costs ~1,200 steps: under the per-field limit, but 20 of them exceed the
        // tree's budget of 20,000.
        let tree = Value::Array(vec![json!("${l.?[#this > 1000].size()}"); 20]);
        let (out, errors) = evaluate_tree(&tree, &ctx);
        assert_eq!(out[0], json!(0));
        assert!(!errors.is_empty() && errors.len() < 20, "{}", errors.len());
        assert!(
            errors
                .iter()
                .all(|e| e.message.contains("used more than 20000 steps in total"))
        );
        assert_eq!(errors.last().map(|e| e.path.as_str()), Some("[19]"));
    }

    #[test]
    fn check_tree_finds_every_syntax_problem() {
        let tree = json!({
            "ok": "${trigger.parameters.env == 'prod' ? 3 : 1}",
            "stages": [
                {"name": "${T(java.lang.Runtime).getRuntime()}"},
                {"name": "fine"},
                {"x": {"it's": "${#exec('id')}", "y": "${a b}", "z": "${missing"}}
            ]
        });
        let errors = check_tree(&tree);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "stages[0].name",
                "stages[2].x['it''s']",
                "stages[2].x.y",
                "stages[2].x.z"
            ]
        );
        assert!(
            errors[0]
                .message
                .contains("type references are not allowed")
        );
        assert!(
            errors[1]
                .message
                .contains("unknown helper function '#exec'")
        );
        assert_eq!(errors[3].expression, "${missing");
        assert!(
            errors[3]
                .to_string()
                .starts_with("stages[2].x.z: expression starting at position 0")
        );
    }
}
