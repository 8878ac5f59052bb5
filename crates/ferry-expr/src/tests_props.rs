//! Property tests: the parser and evaluator never panic, integer arithmetic matches Rust's
//! checked arithmetic, trees without `${` pass through unchanged, and literal text and string
//! literals round-trip.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::tests_language::{FakeHost, sample_root};
use crate::{EvalContext, EvalError, Limits, NullHost, Template, check_tree, evaluate_tree};

/// Tokens of the language (and of its forbidden relatives), for generating near-valid input.
const TOKENS: &[&str] = &[
    "${",
    "}",
    "{",
    "(",
    ")",
    "[",
    "]",
    ".",
    "?.",
    "?",
    ":",
    "?:",
    ",",
    "'",
    "\"",
    "''",
    "#this",
    "#root",
    "#stage(",
    "#toJson(",
    "#readYaml(",
    "#toInt(",
    "#fromUrl(",
    "#nope(",
    "T(",
    "new",
    "@",
    "&",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "!",
    "&&",
    "||",
    "and",
    "or",
    "not",
    "eq",
    "div",
    "matches",
    "instanceof",
    "between",
    ".?[",
    ".^[",
    ".$[",
    ".![",
    "true",
    "false",
    "null",
    "0",
    "1",
    "-1",
    "2.5",
    "1e400",
    "9223372036854775807",
    "'a'",
    "'${'",
    "\"}\"",
    "n",
    "s",
    "list",
    "map",
    "nil",
    "names",
    "execution",
    "stages",
    "size()",
    "length()",
    ".split(','",
    ".substring(",
    ".replace('a','aa')",
    "get(",
    "keySet()",
    "\n",
    " ",
    "é",
    "\u{0}",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|t| t.concat())
}

/// Parses and (if it parses) evaluates with both hosts, and checks the tree functions; only
/// panics would fail.
fn exercise(src: &str) {
    let root = sample_root();
    let _ = check_tree(&Value::String(src.to_string()));
    if let Ok(t) = Template::parse(src) {
        for host in [&NullHost as &dyn crate::Host, &FakeHost] {
            let ctx = EvalContext {
                root: &root,
                host,
                limits: Limits {
                    max_steps: 20_000,
                    ..Limits::default()
                },
            };
            let _ = t.evaluate(&ctx);
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>()
            .prop_filter("no ${", |s| !s.contains("${"))
            .prop_map(Value::String),
        "[a-z$ {}]{0,8}"
            .prop_filter("no ${", |s| !s.contains("${"))
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_text(s in any::<String>()) {
        exercise(&s);
        exercise(&format!("${{{s}}}"));
        exercise(&format!("x ${{{s}}} y"));
    }

    #[test]
    fn parser_never_panics_on_token_soup(s in token_soup()) {
        exercise(&s);
        exercise(&format!("${{{s}}}"));
    }

    #[test]
    fn integer_arithmetic_matches_checked_rust(a in any::<i64>(), b in prop_oneof![any::<i64>(), -3i64..3], op in 0usize..5) {
        let (sym, want) = match op {
            0 => ("+", a.checked_add(b)),
            1 => ("-", a.checked_sub(b)),
            2 => ("*", a.checked_mul(b)),
            3 => ("/", a.checked_div(b)),
            _ => ("%", a.checked_rem(b)),
        };
        let root = json!({"a": a, "b": b});
        let t = Template::parse(&format!("${{a {sym} b}}")).unwrap();
        let ctx = EvalContext::new(&root, &NullHost);
        match (t.evaluate(&ctx), want) {
            (Ok(v), Some(w)) => prop_assert_eq!(v, json!(w)),
            (Err(EvalError::Overflow { .. }), None) => prop_assert!(b != 0 || op < 3),
            (Err(EvalError::DivisionByZero { .. }), None) => prop_assert_eq!(b, 0),
            (got, want) => prop_assert!(false, "{a} {sym} {b}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn trees_without_expressions_are_unchanged(v in arb_json()) {
        let root = sample_root();
        let ctx = EvalContext::new(&root, &NullHost);
        let (out, errors) = evaluate_tree(&v, &ctx);
        prop_assert!(errors.is_empty());
        prop_assert_eq!(&out, &v);
        prop_assert!(check_tree(&v).is_empty());
    }

    #[test]
    fn literal_text_round_trips(s in any::<String>().prop_filter("no ${", |s| !s.contains("${"))) {
        let t = Template::parse(&s).unwrap();
        prop_assert!(!t.has_expressions());
        let root = json!({});
        let ctx = EvalContext::new(&root, &NullHost);
        prop_assert_eq!(t.evaluate(&ctx).unwrap(), Value::String(s));
    }

    #[test]
    fn string_literals_round_trip(s in "[^\u{0}]{0,40}", double in any::<bool>()) {
        let (q, escaped) = if double { ('"', s.replace('"', "\"\"")) } else { ('\'', s.replace('\'', "''")) };
        let src = format!("${{{q}{escaped}{q}}}");
        let root = json!({});
        let ctx = EvalContext::new(&root, &NullHost);
        let t = Template::parse(&src).unwrap();
        prop_assert_eq!(t.evaluate(&ctx).unwrap(), Value::String(s));
    }
}
