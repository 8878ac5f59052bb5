//! Pipeline parameters given on the command line as `-p key=value`.
//!
//! The first `=` separates key and value, so values may contain `=`; a value may be empty
//! (`-p note=`). Keys are non-empty, without whitespace. A key given twice is an error rather
//! than "last one wins", because a typo in a long command line should not silently deploy the
//! wrong thing.

use serde_json::{Map, Value};

/// One `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name.
    pub key: String,
    /// Its value, as a string (pipelines receive parameters as strings, as in Spinnaker).
    pub value: String,
}

/// Parses one `key=value` (used by clap as the value parser of `-p`).
pub fn parse_param(raw: &str) -> Result<Param, String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(format!("expected key=value, got \"{raw}\""));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key is empty in \"{raw}\"; expected key=value"));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("the key \"{key}\" contains whitespace"));
    }
    Ok(Param {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// Collects parameters into the JSON object the run API takes; a key given twice is an error.
pub fn to_object(params: &[Param]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for p in params {
        if out.contains_key(&p.key) {
            return Err(format!("parameter \"{}\" is given more than once", p.key));
        }
        out.insert(p.key.clone(), Value::String(p.value.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_forms() {
        let p = parse_param("env=prod").unwrap();
        assert_eq!((p.key.as_str(), p.value.as_str()), ("env", "prod"));
        let p = parse_param("query=a=b&c=d").unwrap();
        assert_eq!((p.key.as_str(), p.value.as_str()), ("query", "a=b&c=d"));
        let p = parse_param("note=").unwrap();
        assert_eq!(p.value, "");
        let p = parse_param("msg=hello world").unwrap();
        assert_eq!(p.value, "hello world");
    }

    #[test]
    fn bad_forms() {
        for (raw, want) in [
            ("env", "expected key=value"),
            ("", "expected key=value"),
            ("=prod", "key is empty"),
            (" =x", "key is empty"),
            ("my key=x", "whitespace"),
        ] {
            let err = parse_param(raw).unwrap_err();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let ps = vec![parse_param("a=1").unwrap(), parse_param("b=2").unwrap()];
        let o = to_object(&ps).unwrap();
        assert_eq!(o["a"], "1");
        assert_eq!(o["b"], "2");
        let ps = vec![parse_param("a=1").unwrap(), parse_param("a=2").unwrap()];
        assert!(to_object(&ps).unwrap_err().contains("more than once"));
    }
}
