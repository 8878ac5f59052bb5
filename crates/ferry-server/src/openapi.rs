//! The OpenAPI 3.1 document, generated from the route table so it cannot drift from the router.

use crate::auth::Action;
use crate::routes::ROUTES;
use serde_json::{Map, Value, json};

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": operation_id(r.method.as_str(), r.path),
            "parameters": params,
            "responses": {
                "2XX": {"description": "Success", "content": {"application/json": {"schema": {}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if r.body {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        if r.action == Action::Public {
            op["security"] = json!([]);
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Ferry API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Ferry's HTTP API. Every route needs a bearer token except those with an empty security list."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "problems"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "problems": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"}}}},
                    "executionId": {"type": "string", "description": "The orchestration the request started, when the error is about it"}
                }}}}}
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for seg in path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        let mut chars = seg.chars();
        if let Some(c) = chars.next() {
            id.push(c.to_ascii_uppercase());
            id.extend(chars.filter(|c| c.is_ascii_alphanumeric()));
        }
    }
    id
}
