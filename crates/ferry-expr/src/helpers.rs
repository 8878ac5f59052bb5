//! Helper functions (`#name(args)`): Spinnaker's pipeline helpers. The set is closed: a name
//! not in [`Helper`] is a parse error listing the helpers that exist. Helpers that need the
//! engine go through [`crate::Host`]; network access exists only via [`crate::Host::fetch_url`].

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::ast::Span;
use crate::error::{EvalError, shorten};
use crate::eval::{Evaluator, MAX_FETCHES};
use crate::value::{self, Num};

/// A helper function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Helper {
    Stage,
    StageByRefId,
    CurrentStage,
    StageExists,
    Judgment,
    Judgement,
    ToJson,
    ReadJson,
    ReadYaml,
    ToInt,
    ToFloat,
    ToBoolean,
    ToBase64,
    FromBase64,
    Alphanumerical,
    CurrentUser,
    FromUrl,
    JsonFromUrl,
    DeployedServerGroups,
    ManifestLabelValue,
    TriggerResolvedArtifact,
}

/// Name, helper, minimum and maximum argument count.
const HELPERS: &[(&str, Helper, usize, usize)] = &[
    ("alphanumerical", Helper::Alphanumerical, 1, 1),
    ("currentStage", Helper::CurrentStage, 0, 0),
    ("currentUser", Helper::CurrentUser, 0, 0),
    ("deployedServerGroups", Helper::DeployedServerGroups, 0, 1),
    ("fromBase64", Helper::FromBase64, 1, 1),
    ("fromUrl", Helper::FromUrl, 1, 1),
    ("jsonFromUrl", Helper::JsonFromUrl, 1, 1),
    ("judgement", Helper::Judgement, 1, 1),
    ("judgment", Helper::Judgment, 1, 1),
    ("manifestLabelValue", Helper::ManifestLabelValue, 3, 3),
    ("readJson", Helper::ReadJson, 1, 1),
    ("readYaml", Helper::ReadYaml, 1, 1),
    ("stage", Helper::Stage, 1, 1),
    ("stageByRefId", Helper::StageByRefId, 1, 1),
    ("stageExists", Helper::StageExists, 1, 1),
    ("toBase64", Helper::ToBase64, 1, 1),
    ("toBoolean", Helper::ToBoolean, 1, 1),
    ("toFloat", Helper::ToFloat, 1, 1),
    ("toInt", Helper::ToInt, 1, 1),
    ("toJson", Helper::ToJson, 1, 1),
    (
        "triggerResolvedArtifact",
        Helper::TriggerResolvedArtifact,
        1,
        1,
    ),
];

impl Helper {
    pub(crate) fn from_name(name: &str) -> Option<Helper> {
        HELPERS
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, h, ..)| *h)
    }

    pub(crate) fn name(self) -> &'static str {
        HELPERS
            .iter()
            .find(|(_, h, ..)| *h == self)
            .map_or("?", |(n, ..)| n)
    }

    /// (minimum, maximum) number of arguments.
    pub(crate) fn arity(self) -> (usize, usize) {
        HELPERS
            .iter()
            .find(|(_, h, ..)| *h == self)
            .map_or((0, 0), |(_, _, min, max)| (*min, *max))
    }

    pub(crate) fn arity_text(self) -> String {
        match self.arity() {
            (0, 0) => "no arguments".into(),
            (1, 1) => "1 argument".into(),
            (a, b) if a == b => format!("{a} arguments"),
            (a, b) => format!("{a} to {b} arguments"),
        }
    }

    /// `#alphanumerical, #currentStage, ...` for error messages.
    pub(crate) fn all_names() -> String {
        HELPERS
            .iter()
            .map(|(n, ..)| format!("#{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses YAML as plain data: explicit tags other than YAML's standard ones (`!!python/object`,
/// `!Ref`, `!custom`, ...) are errors, and documents are bounded in depth, size and aliases.
/// Booleans follow YAML 1.2 (`true`/`false` only; `yes`, `on`, `y` stay strings).
pub(crate) fn read_yaml(text: &str) -> Result<Value, String> {
    let mut options = serde_saphyr::Options::default();
    options.reject_unsupported_tags = true;
    options.strict_booleans = true;
    options.alias_limits.max_total_replayed_events = 100_000;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| e.to_string())
}

impl Evaluator<'_> {
    fn helper_error(&self, helper: Helper, message: String, span: Span) -> EvalError {
        EvalError::Helper {
            helper: helper.name(),
            message,
            at: self.loc(span),
        }
    }

    fn helper_str<'a>(
        &self,
        helper: Helper,
        args: &'a [Cow<'_, Value>],
        i: usize,
        span: Span,
    ) -> Result<&'a str, EvalError> {
        match args.get(i).map(|a| &**a) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(EvalError::Arguments {
                callee: format!("#{}", helper.name()),
                message: format!(
                    "argument {} must be a string, not {}",
                    i + 1,
                    value::describe(other)
                ),
                at: self.loc(span),
            }),
            None => Err(EvalError::Arguments {
                callee: format!("#{}", helper.name()),
                message: format!("argument {} is missing", i + 1),
                at: self.loc(span),
            }),
        }
    }

    /// A value from the host: missing is an error; the copy is paid for.
    fn host_value(
        &mut self,
        helper: Helper,
        v: Option<Value>,
        missing: String,
        span: Span,
    ) -> Result<Value, EvalError> {
        match v {
            Some(v) => {
                self.charge_copy(&v, span)?;
                Ok(v)
            }
            None => Err(self.helper_error(helper, missing, span)),
        }
    }

    fn fetch(&mut self, helper: Helper, url: &str, span: Span) -> Result<String, EvalError> {
        let fetch_error = |ev: &Self, message: String| EvalError::Fetch {
            helper: helper.name(),
            url: shorten(url, 200),
            message,
            at: ev.loc(span),
        };
        if self.fetches >= MAX_FETCHES {
            return Err(fetch_error(
                self,
                format!("at most {MAX_FETCHES} URL fetches are allowed per expression"),
            ));
        }
        self.fetches += 1;
        let body = self.host.fetch_url(url).map_err(|m| fetch_error(self, m))?;
        self.check_len(body.len(), span)?;
        self.charge_bytes(body.len(), span)?;
        Ok(body)
    }

    fn parse_json(&mut self, helper: Helper, text: &str, span: Span) -> Result<Value, EvalError> {
        self.charge_bytes(text.len(), span)?;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| self.helper_error(helper, format!("invalid JSON: {e}"), span))?;
        self.charge_copy(&v, span)?;
        Ok(v)
    }

    /// Calls a helper with evaluated arguments (the parser already checked their number).
    pub(crate) fn call_helper(
        &mut self,
        helper: Helper,
        args: &[Cow<'_, Value>],
        span: Span,
    ) -> Result<Value, EvalError> {
        let host = self.host;
        // Every helper reads its string arguments at least once: pay for that up front.
        for a in args {
            if let Value::String(s) = &**a {
                self.charge_bytes(s.len(), span)?;
            }
        }
        match helper {
            Helper::Stage => {
                let name = self.helper_str(helper, args, 0, span)?;
                self.host_value(
                    helper,
                    host.stage(name),
                    format!("no stage named '{name}' in this execution"),
                    span,
                )
            }
            Helper::StageByRefId => {
                let id = self.helper_str(helper, args, 0, span)?;
                self.host_value(
                    helper,
                    host.stage_by_ref_id(id),
                    format!("no stage with refId '{id}' in this execution"),
                    span,
                )
            }
            Helper::CurrentStage => self.host_value(
                helper,
                host.current_stage(),
                "there is no current stage here".into(),
                span,
            ),
            Helper::StageExists => {
                let name = self.helper_str(helper, args, 0, span)?;
                Ok(Value::Bool(host.stage(name).is_some()))
            }
            Helper::Judgment | Helper::Judgement => {
                let name = self.helper_str(helper, args, 0, span)?;
                self.host_value(
                    helper,
                    host.judgment(name),
                    format!("no manual judgment stage named '{name}' with a chosen input"),
                    span,
                )
            }
            Helper::CurrentUser => Ok(Value::String(
                host.current_user().unwrap_or_else(|| "anonymous".into()),
            )),
            Helper::DeployedServerGroups => {
                let stage = match args.first() {
                    Some(_) => Some(self.helper_str(helper, args, 0, span)?),
                    None => None,
                };
                let missing = match stage {
                    Some(s) => format!("no deployed server groups are known for stage '{s}'"),
                    None => "no deployed server groups are known for this execution".into(),
                };
                self.host_value(helper, host.deployed_server_groups(stage), missing, span)
            }
            Helper::ManifestLabelValue => {
                let stage = self.helper_str(helper, args, 0, span)?;
                let kind = self.helper_str(helper, args, 1, span)?;
                let label = self.helper_str(helper, args, 2, span)?;
                self.host_value(
                    helper,
                    host.manifest_label_value(stage, kind, label),
                    format!("no label '{label}' on a {kind} deployed by stage '{stage}'"),
                    span,
                )
            }
            Helper::TriggerResolvedArtifact => {
                let name = self.helper_str(helper, args, 0, span)?;
                self.host_value(
                    helper,
                    host.trigger_resolved_artifact(name),
                    format!("the trigger has no resolved artifact named '{name}'"),
                    span,
                )
            }
            Helper::FromUrl => {
                let url = self.helper_str(helper, args, 0, span)?;
                self.fetch(helper, url, span).map(Value::String)
            }
            Helper::JsonFromUrl => {
                let url = self.helper_str(helper, args, 0, span)?;
                let body = self.fetch(helper, url, span)?;
                self.parse_json(helper, &body, span)
            }
            Helper::ToJson => {
                let v = args.first().map_or(&Value::Null, |a| &**a);
                let s = self.json(v, span)?;
                if s.contains("${") {
                    return Err(EvalError::ToJsonExpression { at: self.loc(span) });
                }
                Ok(Value::String(s))
            }
            Helper::ReadJson => {
                let text = self.helper_str(helper, args, 0, span)?;
                self.parse_json(helper, text, span)
            }
            Helper::ReadYaml => {
                let text = self.helper_str(helper, args, 0, span)?;
                self.charge_bytes(text.len(), span)?;
                let v = read_yaml(text)
                    .map_err(|m| self.helper_error(helper, format!("invalid YAML: {m}"), span))?;
                self.charge_copy(&v, span)?;
                Ok(v)
            }
            Helper::ToInt => {
                let v = args.first().map_or(&Value::Null, |a| &**a);
                match v {
                    Value::String(s) => s.parse::<i64>().map(Value::from).map_err(|_| {
                        self.helper_error(
                            helper,
                            format!("'{}' is not an integer", shorten(s, 40)),
                            span,
                        )
                    }),
                    Value::Number(_) => match value::as_num(v) {
                        Some(Num::Int(i)) => Ok(Value::from(i)),
                        _ => Err(self.helper_error(
                            helper,
                            format!("{} is not an integer", value::describe(v)),
                            span,
                        )),
                    },
                    other => Err(self.helper_error(
                        helper,
                        format!("cannot convert {} to an integer", value::describe(other)),
                        span,
                    )),
                }
            }
            Helper::ToFloat => {
                let v = args.first().map_or(&Value::Null, |a| &**a);
                let f = match v {
                    Value::String(s) => s.trim().parse::<f64>().map_err(|_| {
                        self.helper_error(
                            helper,
                            format!("'{}' is not a number", shorten(s, 40)),
                            span,
                        )
                    })?,
                    Value::Number(_) => value::as_num(v).map_or(0.0, Num::as_f64),
                    other => {
                        return Err(self.helper_error(
                            helper,
                            format!("cannot convert {} to a number", value::describe(other)),
                            span,
                        ));
                    }
                };
                self.num_value(Num::Float(f), span)
            }
            Helper::ToBoolean => {
                // Java's Boolean.valueOf: "true" in any case is true, everything else false.
                let v = args.first().map_or(&Value::Null, |a| &**a);
                match v {
                    Value::Bool(b) => Ok(Value::Bool(*b)),
                    Value::String(s) => Ok(Value::Bool(s.eq_ignore_ascii_case("true"))),
                    Value::Null => Ok(Value::Bool(false)),
                    other => Err(self.helper_error(
                        helper,
                        format!("cannot convert {} to a boolean", value::describe(other)),
                        span,
                    )),
                }
            }
            Helper::ToBase64 => {
                let text = self.helper_str(helper, args, 0, span)?;
                let len = text.len().div_ceil(3).saturating_mul(4);
                self.check_len(len, span)?;
                self.charge_bytes(len, span)?;
                Ok(Value::String(BASE64.encode(text.as_bytes())))
            }
            Helper::FromBase64 => {
                let text = self.helper_str(helper, args, 0, span)?;
                self.charge_bytes(text.len(), span)?;
                let bytes = BASE64
                    .decode(text.trim())
                    .map_err(|e| self.helper_error(helper, format!("invalid base64: {e}"), span))?;
                String::from_utf8(bytes).map(Value::String).map_err(|_| {
                    self.helper_error(helper, "the decoded bytes are not UTF-8 text".into(), span)
                })
            }
            Helper::Alphanumerical => {
                let text = self.helper_str(helper, args, 0, span)?;
                Ok(Value::String(
                    text.chars().filter(char::is_ascii_alphanumeric).collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn helper_table_is_consistent() {
        for (name, h, min, max) in HELPERS {
            assert_eq!(Helper::from_name(name), Some(*h));
            assert_eq!(h.name(), *name);
            assert_eq!(h.arity(), (*min, *max));
        }
        assert!(Helper::from_name("exec").is_none());
        assert!(Helper::all_names().contains("#stage, #stageByRefId"));
        assert_eq!(
            Helper::DeployedServerGroups.arity_text(),
            "0 to 1 arguments"
        );
        assert_eq!(Helper::ManifestLabelValue.arity_text(), "3 arguments");
    }

    #[test]
    fn yaml_is_plain_data_only() {
        assert_eq!(
            read_yaml("a: 1\nb: [x, 'y']\nc: {d: true}").unwrap(),
            json!({"a": 1, "b": ["x", "y"], "c": {"d": true}})
        );
        assert_eq!(
            read_yaml("a: &x [1]\nb: *x").unwrap(),
            json!({"a": [1], "b": [1]})
        );
        assert_eq!(read_yaml("a: !!str 1").unwrap(), json!({"a": "1"}));
        assert_eq!(
            read_yaml("[y, yes, on, true, 'no', 1.5, null]").unwrap(),
            json!(["y", "yes", "on", true, "no", 1.5, null])
        );
        for bad in [
            "!!python/object/apply:os.system ['id']",
            "a: !!python/object:__main__.X {}",
            "a: !custom value",
            "a: !Ref Thing",
            "!<tag:example.com,2000:app/foo> x",
            "a: !!javax.script.ScriptEngineManager [x]",
        ] {
            assert!(read_yaml(bad).is_err(), "{bad} should be rejected");
        }
        let nested = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
        assert!(read_yaml(&nested).is_err());
        let laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]";
        assert!(read_yaml(laughs).is_err());
    }
}
