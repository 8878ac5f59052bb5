//! Templates: strings with zero or more `${...}` parts, parsed once and evaluated many times.
//!
//! Finding the end of a `${` is quote- and brace-aware, so `${ {a: 1}['a'] }` and
//! `${ 'a}b' }` end at the right `}`. Expressions do not nest; a literal `${` is written
//! `${"${"}` (the expression is the string `"${"`).

use std::ops::Range;

use serde_json::Value;

use crate::ast::{Expr, Span};
use crate::error::{EvalError, ParseError};
use crate::eval::{EvalContext, Evaluator, Limits, Scope};
use crate::lexer::char_pos;
use crate::parser::parse_expression;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// Literal text, copied as is.
    Text(String),
    /// A `${...}` part; `range` covers the delimiters too.
    Expr { range: Range<usize>, expr: Expr },
}

/// A string with zero or more `${ ... }` parts, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// True if `s` contains `${`, i.e. would be treated as a template. Cheap: no parsing.
pub fn contains_expression(s: &str) -> bool {
    s.contains("${")
}

/// Finds the `}` that closes an expression whose text starts at `from`, passing over quoted
/// strings and balanced braces (inline lists and maps).
fn find_close(src: &str, open: usize, from: usize) -> Result<usize, ParseError> {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<(u8, usize)> = None;
    for (i, &c) in bytes.iter().enumerate().skip(from) {
        match quote {
            // A doubled quote closes and immediately reopens, which is what the lexer expects.
            Some((q, _)) => {
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' => quote = Some((c, i)),
                b'{' => depth += 1,
                b'}' if depth == 0 => return Ok(i),
                b'}' => depth -= 1,
                _ => {}
            },
        }
    }
    match quote {
        Some((_, at)) => Err(ParseError::UnterminatedString {
            position: char_pos(src, at),
        }),
        None => Err(ParseError::Unterminated {
            position: char_pos(src, open),
        }),
    }
}

impl Template {
    /// Parses a template with default [`Limits`].
    pub fn parse(src: &str) -> Result<Template, ParseError> {
        Self::parse_with_limits(src, &Limits::default())
    }

    /// Parses a template; each expression must fit `limits.max_source_len` and
    /// `limits.max_depth`.
    pub fn parse_with_limits(src: &str, limits: &Limits) -> Result<Template, ParseError> {
        Self::parse_detailed(src, limits).map_err(|(e, _)| e)
    }

    /// Like [`Template::parse_with_limits`], also returning the byte range of the failing part.
    pub(crate) fn parse_detailed(
        src: &str,
        limits: &Limits,
    ) -> Result<Template, (ParseError, Range<usize>)> {
        let mut segments = Vec::new();
        let mut text_start = 0;
        while let Some(off) = src.get(text_start..).and_then(|rest| rest.find("${")) {
            let open = text_start + off;
            if open > text_start {
                segments.push(Segment::Text(src[text_start..open].to_string()));
            }
            let inner = open + 2;
            let close = find_close(src, open, inner).map_err(|e| (e, open..src.len()))?;
            let range = open..close + 1;
            let text = &src[inner..close];
            if text.trim().is_empty() {
                return Err((
                    ParseError::Empty {
                        position: char_pos(src, open),
                    },
                    range,
                ));
            }
            if text.len() > limits.max_source_len {
                let e = ParseError::TooLong {
                    position: char_pos(src, open),
                    len: text.len(),
                    limit: limits.max_source_len,
                };
                return Err((e, range));
            }
            let expr =
                parse_expression(src, inner, close, limits).map_err(|e| (e, range.clone()))?;
            segments.push(Segment::Expr { range, expr });
            text_start = close + 1;
        }
        if text_start < src.len() {
            segments.push(Segment::Text(src[text_start..].to_string()));
        }
        Ok(Template {
            source: src.to_string(),
            segments,
        })
    }

    /// Parses a bare expression without `${ }` (Spinnaker's `stageEnabled.expression` and
    /// expression preconditions), as a template that is exactly that one expression: its result
    /// keeps its JSON type. Positions in errors are offsets into `src`.
    pub fn parse_expression(src: &str, limits: &Limits) -> Result<Template, ParseError> {
        if src.trim().is_empty() {
            return Err(ParseError::Empty { position: 0 });
        }
        if src.len() > limits.max_source_len {
            return Err(ParseError::TooLong {
                position: 0,
                len: src.len(),
                limit: limits.max_source_len,
            });
        }
        let expr = parse_expression(src, 0, src.len(), limits)?;
        Ok(Template {
            source: src.to_string(),
            segments: vec![Segment::Expr {
                range: 0..src.len(),
                expr,
            }],
        })
    }

    /// The template text as given to [`Template::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True if the template has at least one `${...}` part.
    pub fn has_expressions(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Expr { .. }))
    }

    /// Evaluate. If the template is exactly one `${expr}` with no surrounding text, the result
    /// keeps its JSON type (number, bool, object, list, null); otherwise parts are stringified
    /// (null as empty text, lists and maps as JSON) and concatenated.
    pub fn evaluate(&self, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
        self.evaluate_detailed(ctx).map_err(|(e, _)| e)
    }

    /// Like [`Template::evaluate`], also returning the byte range of the failing `${...}`.
    pub(crate) fn evaluate_detailed(
        &self,
        ctx: &EvalContext<'_>,
    ) -> Result<Value, (EvalError, Range<usize>)> {
        let mut ev = Evaluator::new(ctx, &self.source);
        self.run(&mut ev, ctx)
    }

    /// Like [`Template::evaluate_detailed`], adding the steps used to `steps`.
    pub(crate) fn evaluate_counted(
        &self,
        ctx: &EvalContext<'_>,
        steps: &mut u64,
    ) -> Result<Value, (EvalError, Range<usize>)> {
        let mut ev = Evaluator::new(ctx, &self.source);
        let r = self.run(&mut ev, ctx);
        *steps = steps.saturating_add(ev.steps());
        r
    }

    fn run(
        &self,
        ev: &mut Evaluator<'_>,
        ctx: &EvalContext<'_>,
    ) -> Result<Value, (EvalError, Range<usize>)> {
        let scope = Scope {
            root: ctx.root,
            this: ctx.root,
            in_element: false,
        };
        if let [Segment::Expr { range, expr }] = self.segments.as_slice() {
            return match ev.eval(expr, scope) {
                Ok(v) => Ok(v.into_owned()),
                Err(e) => Err((e, range.clone())),
            };
        }
        if !self.has_expressions() {
            return Ok(Value::String(self.source.clone()));
        }
        let whole = Span {
            start: 0,
            end: self.source.len(),
        };
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => {
                    ev.check_len(out.len().saturating_add(t.len()), whole)
                        .map_err(|e| (e, whole.start..whole.end))?;
                    out.push_str(t);
                }
                Segment::Expr { range, expr } => {
                    let fail = |e| (e, range.clone());
                    let v = ev.eval(expr, scope).map_err(fail)?;
                    let t = ev.text(&v, "", expr.span).map_err(fail)?;
                    let span = Span {
                        start: range.start,
                        end: range.end,
                    };
                    ev.check_len(out.len().saturating_add(t.len()), span)
                        .map_err(fail)?;
                    out.push_str(&t);
                }
            }
        }
        Ok(Value::String(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::host::NullHost;

    fn eval(src: &str, root: Value) -> Result<Value, String> {
        let t = Template::parse(src).map_err(|e| format!("parse: {e}"))?;
        let ctx = EvalContext::new(&root, &NullHost);
        t.evaluate(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn segments_and_types() {
        let root = json!({"n": 3, "s": "x", "l": [1, 2], "m": {"a": 1}, "z": null, "b": true});
        let cases: &[(&str, Value)] = &[
            ("plain text", json!("plain text")),
            ("", json!("")),
            ("${n}", json!(3)),
            ("${l}", json!([1, 2])),
            ("${m}", json!({"a": 1})),
            ("${z}", json!(null)),
            ("${b}", json!(true)),
            (" ${n}", json!(" 3")),
            (
                "n=${n}, s=${s}, l=${l}, m=${m}, z=[${z}], b=${b}",
                json!(r#"n=3, s=x, l=[1,2], m={"a":1}, z=[], b=true"#),
            ),
            ("${n}${s}", json!("3x")),
            ("${\"${\"}", json!("${")),
            ("literal ${\"${\"}n} here", json!("literal ${n} here")),
            ("${ {a: '}'}['a'] }", json!("}")),
            ("${ 'it''s' }", json!("it's")),
            ("${ \"a}b\" }", json!("a}b")),
            ("${ {1,{2}}.size() }", json!(2)),
            ("$ {n} $x {", json!("$ {n} $x {")),
            ("a}b", json!("a}b")),
            ("${1.5}", json!(1.5)),
        ];
        for (src, want) in cases {
            assert_eq!(eval(src, root.clone()).as_ref(), Ok(want), "{src}");
        }
    }

    #[test]
    fn parse_errors_point_at_the_expression() {
        let cases = [
            ("abc ${n", "expression starting at position 4 is not closed"),
            ("ab ${}", "empty expression '${}' at position 3"),
            ("ab ${   }", "empty expression"),
            (
                "${ 'abc }",
                "string literal starting at position 3 is not closed",
            ),
            ("é ${ a b }", "found 'b' at position 7"),
            ("${ a ${b} }", "nested '${'"),
        ];
        for (src, want) in cases {
            let err = Template::parse(src).expect_err(src).to_string();
            assert!(err.contains(want), "{src}: {err}");
        }
        let long = format!("${{{}}}", "1+".repeat(10_000) + "1");
        assert!(matches!(
            Template::parse(&long),
            Err(ParseError::TooLong { .. })
        ));
    }

    #[test]
    fn bare_expressions() {
        let root = json!({"parameters": {"deploy": "true", "n": 2}});
        let ctx = EvalContext::new(&root, &NullHost);
        let limits = Limits::default();
        let t =
            Template::parse_expression("parameters.deploy == 'true' and parameters.n > 1", &limits)
                .unwrap();
        assert!(t.has_expressions());
        assert_eq!(t.evaluate(&ctx).unwrap(), json!(true));
        assert_eq!(
            Template::parse_expression("parameters.n * 2", &limits)
                .unwrap()
                .evaluate(&ctx)
                .unwrap(),
            json!(4)
        );
        let e = Template::parse_expression("parameters.n +", &limits).unwrap_err();
        assert!(e.to_string().contains("at position 14"), "{e}");
        assert!(matches!(
            Template::parse_expression("  ", &limits),
            Err(ParseError::Empty { .. })
        ));
        assert!(matches!(
            Template::parse_expression("T(x)", &limits),
            Err(ParseError::TypeReference { position: 0 })
        ));
        let e = Template::parse_expression("parameters.nope.x", &limits)
            .unwrap()
            .evaluate(&ctx)
            .unwrap_err();
        assert_eq!(e.location().position, 0);
    }

    #[test]
    fn has_expressions_and_source() {
        let t = Template::parse("a ${b} c").unwrap();
        assert!(t.has_expressions());
        assert_eq!(t.source(), "a ${b} c");
        assert!(!Template::parse("a $ {b} c").unwrap().has_expressions());
        assert!(contains_expression("x${"));
        assert!(!contains_expression("x$ {"));
    }

    #[test]
    fn output_limit_applies_to_the_whole_template() {
        let root = json!({"s": "x".repeat(600)});
        let t = Template::parse("${s}-${s}").unwrap();
        let mut ctx = EvalContext::new(&root, &NullHost);
        ctx.limits.max_output_bytes = 1000;
        let err = t.evaluate(&ctx).unwrap_err();
        assert!(
            matches!(err, EvalError::OutputLimit { limit: 1000, .. }),
            "{err}"
        );
        ctx.limits.max_output_bytes = 1201;
        assert_eq!(t.evaluate(&ctx).unwrap().as_str().map(str::len), Some(1201));
    }
}
