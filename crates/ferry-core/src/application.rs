//! Applications: the unit that owns pipelines, clusters and load balancers.

use crate::fields::Fields;
use crate::problem::{Problem, Problems};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validated application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Lower-case name: letters, digits and `-`, starting with a letter.
    pub name: String,
    /// Owner's email.
    pub email: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Users or groups that own the application.
    pub owners: Vec<String>,
    /// Creation time, epoch millis (set by the store).
    #[serde(default)]
    pub created_at: i64,
    /// Last update time, epoch millis (set by the store).
    #[serde(default)]
    pub updated_at: i64,
}

/// Checks an application name: `^[a-z][a-z0-9-]{0,62}$`. Names become parts of server group
/// names (`app-stack-detail-v001`), so `_` and upper case are refused.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=63).contains(&name.len());
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid application name: use 1-63 lower-case letters, digits and '-', starting with a letter"
        ))
    }
}

impl Application {
    /// Reads an application document (`{name, email, description, owners}`), reporting every problem.
    pub fn parse(doc: &Value) -> Result<Application, Problems> {
        let mut problems: Vec<Problem> = Vec::new();
        let mut f = Fields::new(doc, "", &mut problems);
        let name = f.required_str("name").unwrap_or_default();
        if !name.is_empty()
            && let Err(e) = check_name(&name)
        {
            f.problem("name", e);
        }
        let email = f.opt_str("email");
        if let Some(e) = &email
            && !e.contains('@')
        {
            f.problem("email", format!("\"{e}\" is not an email address"));
        }
        let description = f.opt_str("description");
        let owners = f.string_list("owners");
        Problems::into_result(
            problems,
            Application {
                name,
                email,
                description,
                owners,
                created_at: 0,
                updated_at: 0,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_reports_every_problem() {
        let app = Application::parse(&json!({"name": "shop", "email": "a@b.c", "owners": ["ann"]}))
            .unwrap();
        assert_eq!(app.owners, vec!["ann"]);
        let err =
            Application::parse(&json!({"name": "Shop_1", "email": "nope", "owners": [1, {}]}))
                .unwrap_err();
        let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("name: \"Shop_1\" is not a valid application name"));
        assert_eq!(got[1], "email: \"nope\" is not an email address");
        assert_eq!(got[2], "owners[1]: must be a string, found an object");
    }
}
