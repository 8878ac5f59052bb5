//! Ferry's pipeline expression language: the part of Spring Expression Language (SpEL) that
//! Spinnaker pipelines use, parsed and evaluated over `serde_json::Value` inside a sandbox.
//!
//! # Using it
//!
//! ```
//! use ferry_expr::{EvalContext, NullHost, Template};
//! use serde_json::json;
//!
//! let root = json!({"trigger": {"parameters": {"env": "prod"}}});
//! let ctx = EvalContext::new(&root, &NullHost);
//! let t = Template::parse("${trigger.parameters.env == 'prod' ? 3 : 1}").unwrap();
//! assert_eq!(t.evaluate(&ctx).unwrap(), json!(3));
//! ```
//!
//! The engine normally calls [`evaluate_tree`] on a whole stage context, and [`check_tree`]
//! when a pipeline is saved; [`Template::parse_expression`] takes a bare expression without
//! `${ }` (`stageEnabled`, preconditions). Helpers that need the engine (`#stage`, `#judgment`,
//! `#fromUrl`, ...) go through the [`Host`] trait; [`NullHost`] provides none of them.
//!
//! # Design
//!
//! `lexer` → `parser` (Pratt, building `ast::Expr`) → `eval` (tree walk over `Cow<Value>`, so
//! reading data borrows from the root instead of copying it), with `methods` and `helpers` as
//! closed tables, `template` for `${...}` scanning and `tree` for walking JSON documents. The
//! user-facing reference is `docs/expressions.md` at the repository root.
//!
//! # Why hand-written
//!
//! SpEL is a Java library; no Rust crate implements it, and the features that make SpEL
//! dangerous (type references, constructors, reflection, bean references, assignment) are
//! exactly the ones pipelines must not have. A small lexer, a Pratt parser and a tree-walking
//! evaluator over JSON values give us the subset users write, with every capability spelled
//! out in this crate and nothing reachable by accident.
//!
//! # Sandbox rules
//!
//! * The language has no way to name a type, construct an object, call an arbitrary method,
//!   read a file or the environment, start a process or open a connection. `T(...)`, `new`,
//!   `@bean`, `&bean`, `=`, `++`, `--` and `instanceof` are rejected by the parser with a
//!   message saying they are not allowed.
//! * Methods are a fixed table of `String`, `List` and `Map` methods; any other name
//!   (`getClass`, `forName`, ...) is a parse error. Helpers are a fixed table too.
//! * The only network access is [`Host::fetch_url`], which the engine routes through its URL
//!   guard; the default refuses everything. At most 8 fetches happen per evaluation.
//! * `#readYaml` accepts plain data only: any non-standard tag (`!!python/object`, `!Ref`,
//!   `!custom`) is an error, and documents are bounded in depth and alias expansion.
//! * `#toJson` refuses output containing `${`, so its result cannot be evaluated again.
//! * Regular expressions use the `regex` crate (linear time, no backtracking) with compiled
//!   size limits.
//!
//! # Limits
//!
//! [`Limits`] bounds every evaluation:
//! * `max_source_len` (16 KiB): text of one `${...}`;
//! * `max_depth` (64, capped at [`HARD_MAX_DEPTH`]): parser recursion and syntax-tree height,
//!   so 10,000 nested parentheses are a [`ParseError`], not a stack overflow, and the
//!   evaluator's recursion is bounded too. The parser and evaluator are split into small
//!   functions so a level costs a few KiB of stack even unoptimised (128 levels fit in 1 MiB);
//! * `max_steps` (100,000 per field, [`TREE_STEP_FACTOR`] times that per [`evaluate_tree`]):
//!   one step per syntax node evaluated, per element visited by a selection, projection or
//!   list search, per JSON node or 64 bytes of text copied, built or scanned, and 1,000 per
//!   regex compiled, so both time and memory are bounded;
//! * `max_output_bytes` (1 MiB): largest string built by `+`, `*`, `replace`, `replaceAll`,
//!   `#toJson`, `#toBase64`, `#fromUrl` or a template; checked before allocating.
//!
//! # Differences from SpEL as Spinnaker runs it
//!
//! * Values are JSON: integers are 64-bit (SpEL's `int` is 32-bit), lists and maps print as
//!   JSON when concatenated (`[1,2]`, `{"a":1}`) instead of Java's `[1, 2]` / `{a=1}`.
//! * Integer overflow, division by zero and non-finite floats are errors, not wrap-around or
//!   `Infinity`.
//! * Conditions must be booleans; the strings `'true'` / `'false'` (any case) are accepted
//!   because parameters are strings. `null < 1` is an error, not `true`.
//! * An unknown top-level name (`${paramters.env}`) is an error naming the available roots;
//!   missing keys below the top level are `null`. Use `#root['name']` for an optional root.
//! * Inside `.?[...]` / `.![...]`, bare names are keys of the element only (as in SpEL);
//!   use `#root.name` to reach the top.
//! * Regexes are Rust `regex` syntax (no backreferences or look-around); `matches` must match
//!   the whole string as in Java.
//! * Not implemented: `between`, `T()`, `new`, bean references, assignment, `instanceof`,
//!   variables other than `#this`/`#root`, and the helpers `#pipelineId`, `#propertiesFromUrl`
//!   and `#yamlFromUrl`.

// Tests may unwrap and panic (house rule 2); library code is linted without this.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod ast;
mod error;
mod eval;
mod helpers;
mod host;
mod lexer;
mod methods;
mod parser;
mod regex_util;
mod template;
mod tree;
mod value;

#[cfg(test)]
mod tests_language;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_sandbox;
#[cfg(test)]
mod tests_spinnaker;

pub use error::{EvalError, FieldError, Location, ParseError};
pub use eval::{EvalContext, HARD_MAX_DEPTH, Limits};
pub use host::{Host, NullHost};
pub use template::{Template, contains_expression};
pub use tree::{TREE_STEP_FACTOR, check_tree, evaluate_tree};

#[cfg(test)]
mod tidy {
    /// House rule: every source file starts with a `//!` line saying what it is for.
    #[test]
    fn every_file_starts_with_a_module_doc() {
        let dirs = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/src"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets"),
        ];
        let mut seen = 0;
        for dir in dirs {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(
                        text.starts_with("//!"),
                        "{} must start with a //! line",
                        path.display()
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 10);
    }
}
