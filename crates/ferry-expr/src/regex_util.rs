//! Regular expressions for `matches`, `replaceAll`, `replaceFirst` and `split`: compiled with
//! size limits, with Java's replacement syntax (`$1`, `${name}`, `\$`) and Java's `split` rules.
//!
//! The engine is Rust's `regex` crate, which runs in linear time (no catastrophic
//! backtracking) but has no backreferences or look-around; patterns using them are rejected.

use regex::{Captures, Regex, RegexBuilder};

/// Longest pattern accepted, in bytes.
pub(crate) const MAX_PATTERN_LEN: usize = 4096;

/// Compiles `pattern` under size limits. With `full`, the pattern must match the whole input.
pub(crate) fn compile(pattern: &str, full: bool) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "pattern is {} bytes long; the limit is {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    let anchored;
    let source = if full {
        anchored = format!(r"\A(?:{pattern})\z");
        anchored.as_str()
    } else {
        pattern
    };
    RegexBuilder::new(source)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "pattern is too large for the sandbox".to_string(),
            other => other.to_string(),
        })
}

/// Why a replacement failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplaceError {
    /// The output would be longer than the limit.
    Limit,
    /// The replacement string is malformed (Java would throw).
    Bad(String),
}

fn push_limited(out: &mut String, s: &str, limit: usize) -> Result<(), ReplaceError> {
    if out.len().saturating_add(s.len()) > limit {
        return Err(ReplaceError::Limit);
    }
    out.push_str(s);
    Ok(())
}

/// Appends the expansion of a Java replacement string for one match.
fn expand(
    re: &Regex,
    caps: &Captures<'_>,
    repl: &str,
    out: &mut String,
    limit: usize,
) -> Result<(), ReplaceError> {
    let mut chars = repl.char_indices().peekable();
    let groups = caps.len().saturating_sub(1);
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => push_limited(out, escaped.encode_utf8(&mut [0; 4]), limit)?,
                None => {
                    return Err(ReplaceError::Bad(
                        "character to be escaped is missing".into(),
                    ));
                }
            },
            '$' => match chars.next() {
                Some((_, '{')) => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch)) if ch.is_ascii_alphanumeric() => name.push(ch),
                            _ => {
                                return Err(ReplaceError::Bad(
                                    "named capturing group is missing trailing '}'".into(),
                                ));
                            }
                        }
                    }
                    if !re.capture_names().any(|n| n == Some(name.as_str())) {
                        return Err(ReplaceError::Bad(format!("no group with name {{{name}}}")));
                    }
                    if let Some(m) = caps.name(&name) {
                        push_limited(out, m.as_str(), limit)?;
                    }
                }
                Some((_, d)) if d.is_ascii_digit() => {
                    let mut group = d.to_digit(10).map_or(0, |v| v as usize);
                    if group > groups {
                        return Err(ReplaceError::Bad(format!("no group {group}")));
                    }
                    // Java takes more digits while the group number still exists.
                    while let Some(&(_, next)) = chars.peek() {
                        let Some(v) = next.to_digit(10) else { break };
                        let candidate = group * 10 + v as usize;
                        if candidate > groups {
                            break;
                        }
                        group = candidate;
                        chars.next();
                    }
                    if let Some(m) = caps.get(group) {
                        push_limited(out, m.as_str(), limit)?;
                    }
                }
                _ => {
                    return Err(ReplaceError::Bad(
                        "illegal group reference after '$'".into(),
                    ));
                }
            },
            other => push_limited(out, other.encode_utf8(&mut [0; 4]), limit)?,
        }
    }
    Ok(())
}

/// Java's `String.replaceAll` (or `replaceFirst` when `all` is false), with an output limit.
pub(crate) fn replace(
    re: &Regex,
    s: &str,
    repl: &str,
    all: bool,
    limit: usize,
) -> Result<String, ReplaceError> {
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let Some(m) = caps.get(0) else { continue };
        push_limited(&mut out, s.get(last..m.start()).unwrap_or_default(), limit)?;
        expand(re, &caps, repl, &mut out, limit)?;
        last = m.end();
        if !all {
            break;
        }
    }
    push_limited(&mut out, s.get(last..).unwrap_or_default(), limit)?;
    Ok(out)
}

/// Java's `String.split(regex)`: no leading empty string for a zero-width match at the start,
/// trailing empty strings removed, and the whole input when nothing matches.
pub(crate) fn split<'s>(re: &Regex, s: &'s str) -> Vec<&'s str> {
    let mut parts = Vec::new();
    let mut index = 0;
    let mut matched = false;
    for m in re.find_iter(s) {
        if m.start() == 0 && m.end() == 0 {
            continue;
        }
        matched = true;
        parts.push(s.get(index..m.start()).unwrap_or_default());
        index = m.end();
    }
    if !matched {
        return vec![s];
    }
    parts.push(s.get(index..).unwrap_or_default());
    while parts.last() == Some(&"") {
        parts.pop();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Regex {
        compile(p, false).unwrap()
    }

    #[test]
    fn split_follows_java() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("a,b,c", ",", &["a", "b", "c"]),
            ("a,b,,", ",", &["a", "b"]),
            (",a", ",", &["", "a"]),
            ("", ",", &[""]),
            (",", ",", &[]),
            ("abc", "", &["a", "b", "c"]),
            ("a1b22c", "\\d+", &["a", "b", "c"]),
            ("a.b", "\\.", &["a", "b"]),
            ("no-match", ",", &["no-match"]),
        ];
        for (s, p, want) in cases {
            assert_eq!(split(&re(p), s), *want, "{s:?}.split({p:?})");
        }
    }

    #[test]
    fn replacement_syntax_follows_java() {
        let cases: &[(&str, &str, &str, Result<&str, ()>)] = &[
            ("hello world", "o", "0", Ok("hell0 w0rld")),
            ("v1.2.3", "(\\d+)\\.(\\d+)", "$2-$1", Ok("v2-1.3")),
            ("ab", "(a)", "$1x", Ok("axb")),
            ("ab", "(?<first>a)", "[${first}]", Ok("[a]b")),
            ("ab", "a", "\\$", Ok("$b")),
            ("ab", "a", "$", Err(())),
            ("ab", "a", "$2", Err(())),
            ("ab", "a", "\\", Err(())),
            ("abc", "", "-", Ok("-a-b-c-")),
            ("a1", "(a)(1)", "$12", Ok("a2")),
        ];
        for (s, p, r, want) in cases {
            let got = replace(&re(p), s, r, true, 1000);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{s}.replaceAll({p}, {r})"),
                Err(()) => assert!(
                    matches!(got, Err(ReplaceError::Bad(_))),
                    "{s}.replaceAll({p}, {r}): {got:?}"
                ),
            }
        }
        assert_eq!(
            replace(&re("a"), "aaa", "b", false, 100).as_deref(),
            Ok("baa")
        );
        assert_eq!(
            replace(&re("a"), "aaa", "bbbb", true, 10),
            Err(ReplaceError::Limit)
        );
    }

    #[test]
    fn full_match_and_limits() {
        let r = compile("a+", true).unwrap();
        assert!(r.is_match("aaa"));
        assert!(!r.is_match("aaab"));
        let r = compile("a|b", true).unwrap();
        assert!(!r.is_match("ab"));
        assert!(compile(&"a".repeat(MAX_PATTERN_LEN + 1), false).is_err());
        assert!(
            compile("(a{1000}){1000}", false)
                .unwrap_err()
                .contains("too large")
        );
        assert!(compile("(a)\\1", false).is_err());
    }
}
