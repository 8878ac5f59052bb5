//! Documents users apply: applications, pipelines, load balancers, firewalls and canary configs,
//! in YAML or JSON, one or many per file. A document says what it is with `kind:`; a Spinnaker pipeline JSON
//! (no `kind`, with `stages`) is accepted as it is. A batch is validated whole before anything
//! is written, so an invalid batch stores nothing.

use ferry_core::{Application, Pipeline, Problem, Problems};
use ferry_engine::{Registry, validate_pipeline};
use serde_json::Value;

/// One validated document.
#[derive(Debug, Clone)]
pub enum Document {
    /// An application.
    Application(Application),
    /// A pipeline.
    Pipeline(Pipeline),
    /// A load balancer (listeners, path routes to clusters, firewalls).
    LoadBalancer(ferry_provider::LoadBalancerSpec),
    /// A firewall (source CIDR allow and deny lists).
    Firewall(ferry_provider::FirewallSpec),
    /// An analysis template (Argo Rollouts' shape), stored as a versioned document.
    AnalysisTemplate {
        /// Its name.
        name: String,
        /// The document as written (without `kind`).
        body: Value,
    },
    /// A canary config (Kayenta's document shape), stored as a versioned document.
    CanaryConfig {
        /// Its name.
        name: String,
        /// The document as written (without `kind`).
        body: Value,
    },
}

/// Reads a load balancer document, reporting every problem with its path.
fn parse_load_balancer(
    body: &Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<ferry_provider::LoadBalancerSpec> {
    let mut body = body.clone();
    if let Some(o) = body.as_object_mut() {
        o.entry("account")
            .or_insert_with(|| Value::String("local".into()));
        o.entry("routes")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    let spec: ferry_provider::LoadBalancerSpec = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => {
            problems.push(Problem::new(prefix, format!("not a load balancer: {e}")));
            return None;
        }
    };
    let before = problems.len();
    if let Err(e) = ferry_core::application::check_name(&spec.name) {
        problems.push(Problem::new(format!("{prefix}.name"), e));
    }
    if spec.listeners.is_empty() {
        problems.push(Problem::new(
            format!("{prefix}.listeners"),
            "needs at least one listener",
        ));
    }
    for (i, l) in spec.listeners.iter().enumerate() {
        if l.port == 0 {
            problems.push(Problem::new(
                format!("{prefix}.listeners[{i}].port"),
                "must be 1-65535",
            ));
        }
    }
    for (i, l) in spec.preview_listeners.iter().enumerate() {
        if l.port == 0 {
            problems.push(Problem::new(
                format!("{prefix}.previewListeners[{i}].port"),
                "must be 1-65535",
            ));
        } else if spec
            .listeners
            .iter()
            .any(|m| m.port == l.port && m.address == l.address)
        {
            problems.push(Problem::new(
                format!("{prefix}.previewListeners[{i}].port"),
                "is already a listener of this load balancer",
            ));
        }
    }
    for (i, r) in spec.routes.iter().enumerate() {
        if !r.path_prefix.starts_with('/') {
            problems.push(Problem::new(
                format!("{prefix}.routes[{i}].pathPrefix"),
                "must start with /",
            ));
        }
        if ferry_provider::Moniker::parse(&r.cluster).is_err() {
            problems.push(Problem::new(
                format!("{prefix}.routes[{i}].cluster"),
                format!("\"{}\" is not a cluster name", r.cluster),
            ));
        }
    }
    (problems.len() == before).then_some(spec)
}

/// Reads a firewall document.
fn parse_firewall(
    body: &Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<ferry_provider::FirewallSpec> {
    let mut body = body.clone();
    if let Some(o) = body.as_object_mut() {
        o.entry("account")
            .or_insert_with(|| Value::String("local".into()));
        o.entry("allow").or_insert_with(|| Value::Array(Vec::new()));
        o.entry("deny").or_insert_with(|| Value::Array(Vec::new()));
    }
    match serde_json::from_value::<ferry_provider::FirewallSpec>(body) {
        Ok(f) => {
            if let Err(e) = ferry_core::application::check_name(&f.name) {
                problems.push(Problem::new(format!("{prefix}.name"), e));
                return None;
            }
            Some(f)
        }
        Err(e) => {
            problems.push(Problem::new(prefix, format!("not a firewall: {e}")));
            None
        }
    }
}

/// Errors reading a file of documents.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is neither valid YAML nor JSON.
    #[error("{0}")]
    Syntax(String),
}

/// Splits a YAML or JSON text into JSON documents. YAML is read as plain data: tags such as
/// `!!python/object` are refused, and YAML 1.2 booleans apply (`yes` stays a string).
pub fn parse_text(text: &str) -> Result<Vec<Value>, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ParseError::Syntax(format!("invalid JSON: {e}")))?;
        return Ok(match v {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    if text.contains("!!")
        || text
            .lines()
            .any(|l| l.trim_start().starts_with('!') || l.contains(": !"))
    {
        return Err(ParseError::Syntax(
            "YAML tags are not allowed: documents are plain data".into(),
        ));
    }
    let options = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| ParseError::Syntax(format!("invalid YAML: {e}")))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Validates a batch of documents, reporting every problem with a `documents[i]` prefix.
/// Pipelines must name an application that exists (`known_apps`) or is in the same batch.
pub fn validate_batch(
    docs: &[Value],
    registry: &Registry,
    canary_sources: &ferry_canary::Sources,
    known_apps: &dyn Fn(&str) -> bool,
) -> Result<Vec<Document>, Problems> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut batch_apps = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let prefix = format!("documents[{i}]");
        let kind = doc.get("kind").and_then(Value::as_str);
        let mut body = doc.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
        let kind = match kind {
            Some(k) => k.to_string(),
            None if doc.get("stages").is_some() => "Pipeline".into(),
            None => {
                problems.push(Problem::new(
                    format!("{prefix}.kind"),
                    "is required (Application or Pipeline); a document with `stages` is read as a Spinnaker pipeline",
                ));
                continue;
            }
        };
        match kind.as_str() {
            "Application" => match Application::parse(&body) {
                Ok(a) => {
                    batch_apps.push(a.name.clone());
                    out.push(Document::Application(a));
                }
                Err(p) => problems.extend(p.prefixed(&prefix).0),
            },
            "Pipeline" => match validate_pipeline(&body, registry) {
                Ok(p) => out.push(Document::Pipeline(p)),
                Err(p) => problems.extend(p.prefixed(&prefix).0),
            },
            "LoadBalancer" => {
                if let Some(lb) = parse_load_balancer(&body, &prefix, &mut problems) {
                    out.push(Document::LoadBalancer(lb));
                }
            }
            "Firewall" => {
                if let Some(f) = parse_firewall(&body, &prefix, &mut problems) {
                    out.push(Document::Firewall(f));
                }
            }
            "AnalysisTemplate" => {
                let before = problems.len();
                let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                if ferry_core::application::check_name(&name).is_err() {
                    problems.push(Problem::new(
                        format!("{prefix}.name"),
                        "is required: lower-case letters, digits and '-'",
                    ));
                }
                // The template's own fields; the rest is Argo's AnalysisTemplate spec.
                let mut spec = body.clone();
                if let Some(o) = spec.as_object_mut() {
                    for key in ["name", "description", "application"] {
                        o.remove(key);
                    }
                }
                let _ = ferry_rollout::analysis::parse_analysis(&spec, &prefix, &mut problems);
                if problems.len() == before {
                    out.push(Document::AnalysisTemplate { name, body });
                }
            }
            "CanaryConfig" => match ferry_canary::validate_canary_config(&body, canary_sources) {
                Ok(c) => out.push(Document::CanaryConfig { name: c.name, body }),
                Err(p) => problems.extend(p.prefixed(&prefix).0),
            },
            other => problems.push(Problem::new(
                format!("{prefix}.kind"),
                format!(
                    "unknown kind \"{other}\"; use Application, Pipeline, LoadBalancer, Firewall, CanaryConfig or AnalysisTemplate"
                ),
            )),
        }
    }
    for (i, d) in out.iter().enumerate() {
        if let Document::Pipeline(p) = d
            && !p.application.is_empty()
            && !batch_apps.contains(&p.application)
            && !known_apps(&p.application)
        {
            let idx = docs
                .iter()
                .position(|v| v.get("name").and_then(Value::as_str) == Some(p.name.as_str()))
                .unwrap_or(i);
            problems.push(Problem::new(
                format!("documents[{idx}].application"),
                format!(
                    "application \"{}\" does not exist; apply it first or in the same batch",
                    p.application
                ),
            ));
        }
    }
    Problems::into_result(problems, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> Registry {
        let dir = std::env::temp_dir();
        ferry_stages::core_registry(&ferry_stages::StageServices {
            http: ferry_http::GuardedClient::new(ferry_http::UrlPolicy::deny_all()).unwrap(),
            notifier: std::sync::Arc::new(ferry_stages::LogNotifier),
            work_dir: dir,
        })
    }

    #[test]
    fn yaml_and_json_documents() {
        let docs = parse_text("kind: Application\nname: shop\n---\nkind: Pipeline\napplication: shop\nname: p\nstages: []\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["stages"], json!([]));
        let docs = parse_text(r#"{"application": "shop", "name": "p", "stages": []}"#).unwrap();
        assert_eq!(docs.len(), 1);
        // YAML 1.2 booleans: `yes` stays a string.
        let docs = parse_text("kind: Application\nname: yes\n").unwrap();
        assert_eq!(docs[0]["name"], json!("yes"));
    }

    #[test]
    fn yaml_tags_are_refused() {
        for text in [
            "a: !!python/object:os.system 'id'\n",
            "a: !custom x\n",
            "!tag\na: 1\n",
        ] {
            assert!(parse_text(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_batch_reports_every_problem_and_needs_known_applications() {
        let docs = vec![
            json!({"kind": "Application", "name": "Bad_Name"}),
            json!({"kind": "Pipeline", "application": "ghost", "name": "p", "stages": [{"refId": "1", "type": "nope"}]}),
            json!({"application": "shop", "name": "q", "stages": []}),
            json!({"name": "mystery"}),
            json!({"kind": "Widget"}),
        ];
        let err = validate_batch(&docs, &registry(), &ferry_canary::Sources::new(), &|a| {
            a == "shop"
        })
        .unwrap_err();
        let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        for want in [
            "documents[0].name: \"Bad_Name\" is not a valid application name",
            "documents[1].stages[0].type: unknown stage type \"nope\"",
            "documents[3].kind: is required",
            "documents[4].kind: unknown kind \"Widget\"",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "missing {want} in {got:#?}"
            );
        }
        let ok = validate_batch(
            &docs[2..3],
            &registry(),
            &ferry_canary::Sources::new(),
            &|a| a == "shop",
        )
        .unwrap();
        assert!(matches!(ok[0], Document::Pipeline(_)));
        let err = validate_batch(
            &docs[2..3],
            &registry(),
            &ferry_canary::Sources::new(),
            &|_| false,
        )
        .unwrap_err();
        assert!(err.0[0].message.contains("does not exist"), "{err}");
    }
}
