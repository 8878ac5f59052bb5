//! The state directory: what the host provider writes so that a restart of Ferry finds its
//! server groups, instances, load balancers and firewalls again.
//!
//! ```text
//! <state_dir>/provider.lock              locked (flock) while a provider runs
//! <state_dir>/provider.json              highest sequence per cluster, listing order
//! <state_dir>/load-balancers.json        every LoadBalancerSpec
//! <state_dir>/firewalls.json             every FirewallSpec
//! <state_dir>/<account>/<server group>/group.json     the server group record
//! <state_dir>/<account>/<server group>/artifact/      copied executable / unpacked tarball
//! <state_dir>/<account>/<server group>/<n>/instance.json  pid, start time, port, restarts
//! <state_dir>/<account>/<server group>/<n>/stdout.log, stderr.log   the instance's output
//! ```
//!
//! Every JSON file is written atomically (a temporary file in the same directory, flushed, then
//! renamed over the old one), so a crash leaves the old or the new version, never half of one.
//! All functions here block; async callers go through [`run_blocking`].

use ferry_provider::{Artifact, Capacity, HealthCheck, Moniker, ServerGroup};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Provider-wide counters file.
pub(crate) const PROVIDER_FILE: &str = "provider.json";
/// Load balancer specs file.
pub(crate) const LOAD_BALANCERS_FILE: &str = "load-balancers.json";
/// Firewall specs file.
pub(crate) const FIREWALLS_FILE: &str = "firewalls.json";
/// Server group record, in the server group's directory.
pub(crate) const GROUP_FILE: &str = "group.json";
/// Instance record, in the instance's directory.
pub(crate) const INSTANCE_FILE: &str = "instance.json";
/// The prepared artifact, in the server group's directory.
pub(crate) const ARTIFACT_DIR: &str = "artifact";

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds JSON that is not what Ferry wrote.
    #[error("{path}: not a valid state file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("a background file task failed: {0}")]
    Task(String),
}

impl StateError {
    fn io(path: &Path, source: std::io::Error) -> StateError {
        StateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Provider-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProviderRecord {
    /// Highest sequence handed out per `<account>/<cluster>`; never goes down, so a number is
    /// never reused, even after its server group is destroyed.
    pub sequences: BTreeMap<String, u32>,
    /// Next creation order number (listing is oldest first).
    pub next_order: u64,
}

/// How a server group's instances are launched, resolved once when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LaunchRecord {
    /// Program: absolute path, or a bare name looked up on `PATH`.
    pub program: PathBuf,
    /// How the user wrote it, for messages.
    pub program_display: String,
    /// Arguments.
    pub args: Vec<String>,
}

/// A server group as recorded in `group.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupRecord {
    /// `app-stack-detail-vNNN`.
    pub name: String,
    /// Account.
    pub account: String,
    /// Moniker with its sequence.
    pub moniker: Moniker,
    /// Instance counts.
    pub capacity: Capacity,
    /// What it runs.
    pub artifact: Artifact,
    /// Readiness check.
    pub health_check: HealthCheck,
    /// Load balancers it registers with.
    pub load_balancers: Vec<String>,
    /// Takes traffic.
    pub enabled: bool,
    /// Traffic weight within its cluster.
    pub weight: u32,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// Who deployed it.
    pub deployed_by: String,
    /// From which execution.
    pub execution_id: Option<String>,
    /// Creation order.
    pub order: u64,
    /// How instances are launched.
    pub launch: LaunchRecord,
    /// A destroy started; a restart finishes it.
    #[serde(default)]
    pub destroying: bool,
}

impl GroupRecord {
    /// The provider-neutral view, without instances.
    pub fn to_server_group(&self) -> ServerGroup {
        ServerGroup {
            name: self.name.clone(),
            account: self.account.clone(),
            provider: crate::KIND.to_string(),
            moniker: self.moniker.clone(),
            capacity: self.capacity,
            artifact: self.artifact.clone(),
            health_check: self.health_check.clone(),
            load_balancers: self.load_balancers.clone(),
            enabled: self.enabled,
            weight: self.weight,
            created_at: self.created_at,
            deployed_by: self.deployed_by.clone(),
            execution_id: self.execution_id.clone(),
            instances: Vec::new(),
        }
    }
}

/// An instance as recorded in `instance.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRecord {
    /// Its number in the server group.
    pub index: u32,
    /// Its port.
    pub port: u16,
    /// Pid (and process group id) of the current run.
    pub pid: Option<i32>,
    /// `/proc/<pid>/stat` field 22 of the current run.
    pub start_time: Option<u64>,
    /// Restarts so far.
    pub restarts: u32,
    /// Start of the current run, epoch ms.
    pub started_at: Option<i64>,
    /// Why it last stopped.
    pub last_exit: Option<String>,
}

/// Writes `value` as JSON to `path` atomically: temporary file, flush to disk, rename.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StateError::io(path, e)
    })
}

/// Reads JSON from `path`; `None` if the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path, e)),
    }
}

/// Creates a directory and its parents.
pub(crate) fn create_dir(path: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(path).map_err(|e| StateError::io(path, e))
}

/// Removes a directory tree; a missing one is fine.
pub(crate) fn remove_dir(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::io(path, e)),
    }
}

/// Runs blocking file work on the blocking pool.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Task(e.to_string()))?
}

/// Names of the subdirectories of `dir` (none if it does not exist).
pub(crate) fn subdirectories(dir: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StateError::io(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert_eq!(read_json::<InstanceRecord>(&path).unwrap(), None);
        let record = InstanceRecord {
            index: 2,
            port: 20_001,
            pid: Some(42),
            start_time: Some(7),
            restarts: 1,
            started_at: Some(5),
            last_exit: Some("exited with status 1".into()),
        };
        write_json(&path, &record).unwrap();
        assert_eq!(read_json(&path).unwrap(), Some(record));
        assert!(!dir.path().join("x.json.tmp").exists());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            read_json::<InstanceRecord>(&path),
            Err(StateError::Corrupt { .. })
        ));
    }
}
