//! Fuzz target: parse arbitrary text as a template and evaluate it with a null host. Any panic,
//! stack overflow, hang or runaway allocation is a bug; errors are expected.
#![no_main]

use ferry_expr::{EvalContext, Limits, NullHost, Template, check_tree};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let root = json!({
        "execution": {"name": "deploy", "stages": [{"name": "Bake", "status": "SUCCEEDED", "context": {"a": 1}}]},
        "trigger": {"parameters": {"env": "prod", "n": "3"}},
        "parameters": {"env": "prod", "n": "3", "empty": ""},
        "n": 7, "f": 2.5, "s": "Hello World", "list": [3, 1, 2], "map": {"a": 1, "b": null}, "nil": null
    });
    let _ = check_tree(&Value::String(src.to_string()));
    if let Ok(template) = Template::parse(src) {
        let ctx = EvalContext {
            root: &root,
            host: &NullHost,
            limits: Limits::default(),
        };
        let _ = template.evaluate(&ctx);
    }
    // Also treat the whole input as the inside of one expression.
    if let Ok(template) = Template::parse(&format!("${{{src}}}")) {
        let ctx = EvalContext::new(&root, &NullHost);
        let _ = template.evaluate(&ctx);
    }
});
