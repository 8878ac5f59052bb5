//! Whole-pipeline validation: the structural checks of `ferry-core`, each stage type's
//! configuration checks, and a parse of every expression, all reported together with paths.

use crate::registry::Registry;
use ferry_core::problem::join_path;
use ferry_core::{Pipeline, Problem, Problems, parse_pipeline};
use serde_json::Value;

/// Validates a pipeline document. Returns the pipeline, or every problem found.
pub fn validate_pipeline(doc: &Value, registry: &Registry) -> Result<Pipeline, Problems> {
    let (pipeline, mut problems) = parse_pipeline(doc);
    for (i, def) in pipeline.stages.iter().enumerate() {
        let path = format!("stages[{i}]");
        if def.stage_type.is_empty() {
            continue;
        }
        let raw = match registry.get(&def.stage_type) {
            None => {
                problems.push(Problem::new(
                    format!("{path}.type"),
                    format!(
                        "unknown stage type \"{}\"; known types: {}",
                        def.stage_type,
                        registry.keys().join(", ")
                    ),
                ));
                Vec::new()
            }
            Some(t) => {
                t.validate(def, &path, &mut problems);
                t.raw_fields(def)
            }
        };
        let skip_all = def
            .context
            .get("skipExpressionEvaluation")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (key, value) in &def.context {
            let evaluated = key == "stageEnabled" || (!skip_all && !raw.iter().any(|r| r == key));
            if !evaluated {
                continue;
            }
            for e in ferry_expr::check_tree(value) {
                problems.push(Problem::new(
                    join_path(&join_path(&path, key), &e.path),
                    format!("invalid expression `{}`: {}", e.expression, e.message),
                ));
            }
        }
    }
    if let Some(n) = doc.get("notifications") {
        for e in ferry_expr::check_tree(n) {
            problems.push(Problem::new(
                join_path("notifications", &e.path),
                format!("invalid expression `{}`: {}", e.expression, e.message),
            ));
        }
    }
    Problems::into_result(problems, pipeline)
}
