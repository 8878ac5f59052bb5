//! The [`Host`] trait: what helper functions need from the engine (stages, judgments, users,
//! artifacts, guarded URL fetches), plus [`NullHost`], which provides none of it.

use serde_json::Value;

/// Helpers that need the engine. Every method has a default that returns `None` (or, for
/// [`Host::fetch_url`], an error), so a host implements only what it has. A helper whose host
/// method returns `None` fails with an error naming the helper and its argument.
///
/// Implementations must not panic and should be cheap: one expression can call a helper once
/// per element of a selection (bounded by the step limit).
pub trait Host: Send + Sync {
    /// `#stage('Deploy')`: the stage of the current execution with this name (or id), as an
    /// object with `status`, `context`, `outputs`, `name`, `refId`, `id`, `type`.
    fn stage(&self, name_or_id: &str) -> Option<Value> {
        let _ = name_or_id;
        None
    }

    /// `#stageByRefId('3')`: the stage with this `refId`, same shape as [`Host::stage`].
    fn stage_by_ref_id(&self, ref_id: &str) -> Option<Value> {
        let _ = ref_id;
        None
    }

    /// `#currentStage()`: the stage whose context is being evaluated.
    fn current_stage(&self) -> Option<Value> {
        None
    }

    /// `#judgment('Approve')`: the input chosen in that manual-judgment stage (usually a string).
    fn judgment(&self, stage_name: &str) -> Option<Value> {
        let _ = stage_name;
        None
    }

    /// `#currentUser()`: the user running the pipeline. `None` yields `"anonymous"`, as in
    /// Spinnaker.
    fn current_user(&self) -> Option<String> {
        None
    }

    /// `#deployedServerGroups()` / `#deployedServerGroups('Deploy')`: a list of
    /// `{account, region, serverGroup, ...}` deployed by the execution (or by that stage).
    fn deployed_server_groups(&self, stage: Option<&str>) -> Option<Value> {
        let _ = stage;
        None
    }

    /// `#manifestLabelValue('Deploy', 'replicaSet', 'app')`: a label's value on a manifest of
    /// the given kind deployed by the given stage.
    fn manifest_label_value(&self, stage: &str, kind: &str, label: &str) -> Option<Value> {
        let _ = (stage, kind, label);
        None
    }

    /// `#triggerResolvedArtifact('image')`: the trigger's resolved artifact with this name.
    fn trigger_resolved_artifact(&self, name: &str) -> Option<Value> {
        let _ = name;
        None
    }

    /// `#fromUrl` / `#jsonFromUrl`: fetch a URL's body as text. The engine routes this through
    /// its URL guard (allow-list, empty by default); the error string is shown to the user.
    fn fetch_url(&self, url: &str) -> Result<String, String> {
        let _ = url;
        Err("no hosts are allow-listed for #fromUrl".into())
    }
}

/// A [`Host`] with nothing: every engine helper fails and `#fromUrl` is refused. Useful for
/// validating and for evaluating expressions that only read the root object.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullHost;

impl Host for NullHost {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_host_provides_nothing() {
        let h = NullHost;
        assert!(h.stage("x").is_none());
        assert!(h.stage_by_ref_id("1").is_none());
        assert!(h.current_stage().is_none());
        assert!(h.judgment("x").is_none());
        assert!(h.current_user().is_none());
        assert!(h.deployed_server_groups(None).is_none());
        assert!(h.manifest_label_value("a", "b", "c").is_none());
        assert!(h.trigger_resolved_artifact("a").is_none());
        assert_eq!(
            h.fetch_url("http://x").unwrap_err(),
            "no hosts are allow-listed for #fromUrl"
        );
    }
}
