//! Spinnaker's naming ("frigga"/moniker): `app-stack-detail-vNNN`. A cluster is
//! `app[-stack[-detail]]`; a server group adds `-vNNN` (three digits at least, from 000).

use serde::{Deserialize, Serialize};

/// The logical name of a cluster, and of a server group when `sequence` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moniker {
    /// Application.
    pub app: String,
    /// Stack, e.g. `prod`.
    pub stack: Option<String>,
    /// Free-form detail.
    pub detail: Option<String>,
    /// Server group sequence (`v003` → 3).
    pub sequence: Option<u32>,
}

/// A name that does not follow the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{name}\" is not a valid {what} name: {reason}")]
pub struct NameError {
    /// The name.
    pub name: String,
    /// Cluster or server group.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

fn part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '.'
                || c == '~'
                || c == '^'
        })
}

impl Moniker {
    /// A cluster moniker. `stack` and `detail` may not contain `-`.
    pub fn cluster(
        app: &str,
        stack: Option<&str>,
        detail: Option<&str>,
    ) -> Result<Moniker, NameError> {
        let err = |reason: String| NameError {
            name: format!("{app}-{}-{}", stack.unwrap_or(""), detail.unwrap_or("")),
            what: "cluster",
            reason,
        };
        ferry_core::application::check_name(app).map_err(err)?;
        for (label, v) in [("stack", stack), ("detail", detail)] {
            if let Some(v) = v.filter(|v| !v.is_empty())
                && !part_ok(v)
            {
                return Err(err(format!(
                    "{label} \"{v}\" may only hold lower-case letters, digits, '_', '.', '~' and '^'"
                )));
            }
        }
        Ok(Moniker {
            app: app.to_string(),
            stack: stack.filter(|s| !s.is_empty()).map(str::to_string),
            detail: detail.filter(|s| !s.is_empty()).map(str::to_string),
            sequence: None,
        })
    }

    /// The cluster name: `app`, `app-stack`, `app-stack-detail` or `app--detail`.
    pub fn cluster_name(&self) -> String {
        match (&self.stack, &self.detail) {
            (None, None) => self.app.clone(),
            (Some(s), None) => format!("{}-{s}", self.app),
            (s, Some(d)) => format!("{}-{}-{d}", self.app, s.as_deref().unwrap_or("")),
        }
    }

    /// The server group name for `sequence`: `<cluster>-v003`.
    pub fn server_group_name(&self, sequence: u32) -> String {
        format!("{}-v{sequence:03}", self.cluster_name())
    }

    /// This moniker with a sequence.
    pub fn with_sequence(&self, sequence: u32) -> Moniker {
        Moniker {
            sequence: Some(sequence),
            ..self.clone()
        }
    }

    /// Parses a server group name (`app-stack-detail-v003`) or a cluster name.
    pub fn parse(name: &str) -> Result<Moniker, NameError> {
        let (cluster, sequence) = match name.rsplit_once("-v") {
            Some((c, seq))
                if !seq.is_empty() && seq.len() >= 3 && seq.chars().all(|c| c.is_ascii_digit()) =>
            {
                (c, seq.parse::<u32>().ok())
            }
            _ => (name, None),
        };
        let mut parts = cluster.splitn(3, '-');
        let app = parts.next().unwrap_or_default();
        let stack = parts.next();
        let detail = parts.next();
        let mut m = Moniker::cluster(app, stack, detail).map_err(|e| NameError {
            name: name.to_string(),
            ..e
        })?;
        m.sequence = sequence;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let cases = [
            ("shop", None, None, "shop"),
            ("shop", Some("prod"), None, "shop-prod"),
            ("shop", Some("prod"), Some("kids"), "shop-prod-kids"),
            ("shop", None, Some("kids"), "shop--kids"),
        ];
        for (app, stack, detail, cluster) in cases {
            let m = Moniker::cluster(app, stack, detail).unwrap();
            assert_eq!(m.cluster_name(), cluster);
            let sg = m.server_group_name(7);
            assert_eq!(sg, format!("{cluster}-v007"));
            let back = Moniker::parse(&sg).unwrap();
            assert_eq!(back, m.with_sequence(7));
            assert_eq!(Moniker::parse(cluster).unwrap(), m);
        }
        assert_eq!(
            Moniker::parse("shop-prod-v1234").unwrap().sequence,
            Some(1234)
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Moniker::cluster("Shop", None, None).is_err());
        assert!(Moniker::cluster("shop", Some("pr-od"), None).is_err());
        assert!(Moniker::cluster("shop", Some("PROD"), None).is_err());
        assert!(Moniker::parse("").is_err());
    }
}
