//! Error types: [`ParseError`] (template and expression syntax), [`EvalError`] (evaluation),
//! and [`FieldError`] (one problem found while walking a JSON tree).
//!
//! Every position is a 0-based character offset into the template string the user wrote
//! (the whole field value, including any text around `${...}`).

use std::fmt;

use thiserror::Error;

/// Where in a template an evaluation error happened: the character offset of the failing
/// sub-expression and its source text (shortened when long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 0-based character offset into the template string.
    pub position: usize,
    /// Source text of the sub-expression that failed, at most ~80 characters.
    pub snippet: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "position {} (`{}`)", self.position, self.snippet)
    }
}

/// Shortens `text` to at most `max` characters, marking the cut with `…`.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// A template or expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A `${` was never closed by a matching `}`.
    #[error("expression starting at position {position} is not closed with '}}'")]
    Unterminated {
        /// Offset of the `${`.
        position: usize,
    },
    /// `${}` with nothing but spaces inside.
    #[error("empty expression '${{}}' at position {position}")]
    Empty {
        /// Offset of the `${`.
        position: usize,
    },
    /// The text of one expression is longer than [`crate::Limits::max_source_len`].
    #[error("expression at position {position} is {len} bytes long; the limit is {limit}")]
    TooLong {
        /// Offset of the `${`.
        position: usize,
        /// Length of the expression text in bytes.
        len: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The expression nests deeper than [`crate::Limits::max_depth`].
    #[error("expression is nested more than {limit} levels deep at position {position}")]
    TooDeep {
        /// Offset where the limit was crossed.
        position: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A character that is not part of the expression language.
    #[error("unexpected character '{ch}' at position {position}")]
    UnexpectedChar {
        /// Offset of the character.
        position: usize,
        /// The character.
        ch: char,
    },
    /// A string literal without its closing quote.
    #[error("string literal starting at position {position} is not closed")]
    UnterminatedString {
        /// Offset of the opening quote.
        position: usize,
    },
    /// A number literal that cannot be represented (too large, not finite, malformed).
    #[error("invalid number '{text}' at position {position}: {reason}")]
    BadNumber {
        /// Offset of the literal.
        position: usize,
        /// The literal as written.
        text: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A token appeared where the grammar expects something else.
    #[error("expected {expected} but found {found} at position {position}")]
    Unexpected {
        /// Offset of the offending token.
        position: usize,
        /// What the parser was looking for.
        expected: String,
        /// What it found.
        found: String,
    },
    /// `T(...)`: SpEL type references (the classic remote-code-execution vector).
    #[error("type references are not allowed in Ferry expressions: T(...) at position {position}")]
    TypeReference {
        /// Offset of the `T`.
        position: usize,
    },
    /// `new ...`: SpEL constructor calls.
    #[error("constructors are not allowed in Ferry expressions: 'new' at position {position}")]
    Constructor {
        /// Offset of `new`.
        position: usize,
    },
    /// `@bean` or `&bean`: SpEL bean references.
    #[error(
        "bean references are not allowed in Ferry expressions: '@' or '&' at position {position}"
    )]
    BeanReference {
        /// Offset of the `@` or `&`.
        position: usize,
    },
    /// `=`, `++` or `--`: expressions never change data.
    #[error(
        "assignment is not allowed in Ferry expressions: '=', '++' or '--' at position {position} (use '==' to compare)"
    )]
    Assignment {
        /// Offset of the operator.
        position: usize,
    },
    /// `instanceof`: it needs Java types, which Ferry expressions cannot name.
    #[error("'instanceof' is not allowed in Ferry expressions (position {position})")]
    Instanceof {
        /// Offset of the keyword.
        position: usize,
    },
    /// SpEL syntax that Ferry deliberately does not implement.
    #[error("{what} is not supported in Ferry expressions (position {position})")]
    Unsupported {
        /// Offset of the construct.
        position: usize,
        /// What was used.
        what: String,
    },
    /// `#name` without parentheses, other than `#this` and `#root`.
    #[error(
        "unknown variable '#{name}' at position {position}; only #this and #root exist (helpers are called with parentheses, e.g. #stage('Deploy'))"
    )]
    UnknownVariable {
        /// Offset of the `#`.
        position: usize,
        /// The variable name without `#`.
        name: String,
    },
    /// `#name(...)` where `name` is not a Ferry helper.
    #[error("unknown helper function '#{name}' at position {position}; known helpers: {known}")]
    UnknownFunction {
        /// Offset of the `#`.
        position: usize,
        /// The function name without `#`.
        name: String,
        /// Comma-separated list of the helpers that exist.
        known: String,
    },
    /// `.name(...)` where no value type has a method of that name (e.g. `getClass`).
    #[error("unknown method '{name}' at position {position}; known methods: {known}")]
    UnknownMethod {
        /// Offset of the method name.
        position: usize,
        /// The method name.
        name: String,
        /// Comma-separated list of all methods that exist.
        known: String,
    },
    /// A helper was called with the wrong number of arguments.
    #[error("helper '#{name}' takes {expected} but was given {given} (position {position})")]
    Arity {
        /// Offset of the call.
        position: usize,
        /// The helper name without `#`.
        name: String,
        /// Human-readable expected argument count.
        expected: String,
        /// Arguments given.
        given: usize,
    },
    /// An inline map key that is not a name, string or number.
    #[error("inline map keys must be names, strings or numbers (position {position})")]
    BadMapKey {
        /// Offset of the key.
        position: usize,
    },
}

impl ParseError {
    /// The 0-based character offset in the template where the problem was found.
    pub fn position(&self) -> usize {
        match self {
            Self::Unterminated { position }
            | Self::Empty { position }
            | Self::TooLong { position, .. }
            | Self::TooDeep { position, .. }
            | Self::UnexpectedChar { position, .. }
            | Self::UnterminatedString { position }
            | Self::BadNumber { position, .. }
            | Self::Unexpected { position, .. }
            | Self::TypeReference { position }
            | Self::Constructor { position }
            | Self::BeanReference { position }
            | Self::Assignment { position }
            | Self::Instanceof { position }
            | Self::Unsupported { position, .. }
            | Self::UnknownVariable { position, .. }
            | Self::UnknownFunction { position, .. }
            | Self::UnknownMethod { position, .. }
            | Self::Arity { position, .. }
            | Self::BadMapKey { position } => *position,
        }
    }
}

/// An expression parsed but failed while being evaluated.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A bare name is not a key of the root object (e.g. a typo in `paramters.env`).
    #[error(
        "unknown name '{name}' at {at}; top-level names are: {available} (use #root['{name}'] for an optional one)"
    )]
    UnknownName {
        /// The name as written.
        name: String,
        /// Comma-separated keys of the root object (shortened when many).
        available: String,
        /// Where.
        at: Location,
    },
    /// A property, index, method or collection operation was applied to null without `?.`.
    #[error("cannot {action} null at {at} (use '?.' to allow null)")]
    Null {
        /// What was attempted, e.g. "read property 'name' of".
        action: String,
        /// Where.
        at: Location,
    },
    /// An operation got a value of the wrong type.
    #[error("{message} at {at}")]
    Type {
        /// What went wrong, naming the types involved.
        message: String,
        /// Where.
        at: Location,
    },
    /// A list or string index outside `0..len`.
    #[error("index {index} is out of bounds for {what} of length {len} at {at}")]
    IndexOutOfBounds {
        /// The index used.
        index: i64,
        /// The length of the list or string.
        len: usize,
        /// "a list" or "a string".
        what: &'static str,
        /// Where.
        at: Location,
    },
    /// A method exists in the language but not on this type of value.
    #[error("{type_name} has no method '{name}' at {at}; its methods are: {known}")]
    NoSuchMethod {
        /// The method name.
        name: String,
        /// Type of the target value, e.g. "a string".
        type_name: &'static str,
        /// The methods that type has.
        known: &'static str,
        /// Where.
        at: Location,
    },
    /// A method or helper got the wrong number or type of arguments.
    #[error("bad arguments to {callee} at {at}: {message}")]
    Arguments {
        /// The method or helper, e.g. "'substring'" or "#toInt".
        callee: String,
        /// What was wrong.
        message: String,
        /// Where.
        at: Location,
    },
    /// A condition (`and`, `or`, `!`, `?:` ternary, selection) was not a boolean.
    #[error("condition must be a boolean (or the string 'true'/'false'), found {found} at {at}")]
    NotBoolean {
        /// Description of the value found.
        found: String,
        /// Where.
        at: Location,
    },
    /// Integer arithmetic overflowed 64 bits.
    #[error("integer overflow in '{op}' at {at}")]
    Overflow {
        /// The operator.
        op: &'static str,
        /// Where.
        at: Location,
    },
    /// Division or remainder by zero.
    #[error("division by zero at {at}")]
    DivisionByZero {
        /// Where.
        at: Location,
    },
    /// A floating-point result was infinite or NaN, which JSON cannot hold.
    #[error("result is not a finite number at {at}")]
    NotFinite {
        /// Where.
        at: Location,
    },
    /// A regular expression did not compile, or is larger than the sandbox allows.
    #[error("invalid regular expression '{pattern}' at {at}: {message}")]
    Regex {
        /// The pattern (shortened when long).
        pattern: String,
        /// Why it was rejected.
        message: String,
        /// Where.
        at: Location,
    },
    /// The evaluation used more than [`crate::Limits::max_steps`] steps.
    #[error("expression exceeded the limit of {limit} evaluation steps at {at}")]
    StepLimit {
        /// The configured limit.
        limit: u64,
        /// Where the limit was crossed.
        at: Location,
    },
    /// A string being built would exceed [`crate::Limits::max_output_bytes`].
    #[error("result would exceed the output limit of {limit} bytes at {at}")]
    OutputLimit {
        /// The configured limit in bytes.
        limit: usize,
        /// Where.
        at: Location,
    },
    /// A helper function failed (stage not found, invalid JSON, bad base64, ...).
    #[error("#{helper} failed at {at}: {message}")]
    Helper {
        /// The helper name without `#`.
        helper: &'static str,
        /// What went wrong.
        message: String,
        /// Where.
        at: Location,
    },
    /// The host refused or failed to fetch a URL for `#fromUrl` / `#jsonFromUrl`.
    #[error("#{helper}('{url}') failed at {at}: {message}")]
    Fetch {
        /// The helper name without `#`.
        helper: &'static str,
        /// The URL (shortened when long).
        url: String,
        /// The host's reason.
        message: String,
        /// Where.
        at: Location,
    },
    /// `#toJson` produced text containing `${`, which could be evaluated again later.
    #[error("#toJson result contains '${{' and could be evaluated again; refusing at {at}")]
    ToJsonExpression {
        /// Where.
        at: Location,
    },
}

impl EvalError {
    /// Where the error happened.
    pub fn location(&self) -> &Location {
        match self {
            Self::UnknownName { at, .. }
            | Self::Null { at, .. }
            | Self::Type { at, .. }
            | Self::IndexOutOfBounds { at, .. }
            | Self::NoSuchMethod { at, .. }
            | Self::Arguments { at, .. }
            | Self::NotBoolean { at, .. }
            | Self::Overflow { at, .. }
            | Self::DivisionByZero { at }
            | Self::NotFinite { at }
            | Self::Regex { at, .. }
            | Self::StepLimit { at, .. }
            | Self::OutputLimit { at, .. }
            | Self::Helper { at, .. }
            | Self::Fetch { at, .. }
            | Self::ToJsonExpression { at } => at,
        }
    }
}

/// One problem found by [`crate::evaluate_tree`] or [`crate::check_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `payload.items[2].name` or `context['deploy.server.groups']`.
    /// Empty when the tree itself is a string.
    pub path: String,
    /// The `${...}` text that failed (shortened when very long).
    pub expression: String,
    /// The parse or evaluation error message.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} in `{}`", self.message, self.expression)
    }
}

impl std::error::Error for FieldError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_text_and_marks_cuts() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
    }

    #[test]
    fn messages_name_positions() {
        let e = ParseError::TypeReference { position: 3 };
        assert!(
            e.to_string()
                .contains("type references are not allowed in Ferry expressions")
        );
        assert_eq!(e.position(), 3);
        let e = EvalError::DivisionByZero {
            at: Location {
                position: 4,
                snippet: "1/0".into(),
            },
        };
        assert_eq!(e.to_string(), "division by zero at position 4 (`1/0`)");
        let f = FieldError {
            path: String::new(),
            expression: "${x}".into(),
            message: "m".into(),
        };
        assert_eq!(f.to_string(), "(root): m in `${x}`");
    }
}
