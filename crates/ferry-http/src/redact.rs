//! `redact_url`: a URL as it may appear in logs and error messages.

use url::Url;

/// Placeholder for redacted values.
const REDACTED: &str = "***";

/// Returns `url` fit for logs: user-info (`user:pass@`) removed, every query-string value
/// replaced by `***` (keys kept; a bare item without `=` is replaced entirely), fragment
/// dropped. Anything that does not parse as a URL becomes `<invalid URL>`, since it cannot be
/// redacted reliably. The path is kept as it is.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => redact_parsed(&parsed),
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// [`redact_url`] for a parsed URL.
pub(crate) fn redact_parsed(url: &Url) -> String {
    let mut url = url.clone();
    strip_credentials(&mut url);
    url.set_fragment(None);
    if let Some(query) = url.query() {
        let redacted: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={REDACTED}"),
                None => REDACTED.to_owned(),
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.to_string()
}

/// Removes user name and password from `url` (no-op for URLs that cannot have them).
pub(crate) fn strip_credentials(url: &mut Url) {
    // These only fail for URLs without a host (`mailto:`), which carry no user-info.
    let _ = url.set_password(None);
    let _ = url.set_username("");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_query_values_and_fragment() {
        for (input, want) in [
            ("https://example.com/a/b", "https://example.com/a/b"),
            ("https://user:pw@example.com/x", "https://example.com/x"),
            ("https://user@example.com/x", "https://example.com/x"),
            (
                "https://example.com/hook?token=abc&x=1",
                "https://example.com/hook?token=***&x=***",
            ),
            (
                "https://example.com/?secretonly",
                "https://example.com/?***",
            ),
            (
                "https://example.com/?a=&&b=c",
                "https://example.com/?a=***&b=***",
            ),
            (
                "https://example.com/#access_token=abc",
                "https://example.com/",
            ),
            (
                "http://u:p@127.0.0.1:8080/?k=v#f",
                "http://127.0.0.1:8080/?k=***",
            ),
            ("not a url user:pw@", "<invalid URL>"),
        ] {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }
}
