//! Lexer: turns the text of one `${...}` expression into tokens with byte spans.
//!
//! Spans are byte offsets into the whole template string so that errors can point at the
//! right place; [`char_pos`] turns them into the character offsets users see.

use crate::error::ParseError;

/// Converts a byte offset in `src` to a 0-based character offset.
pub(crate) fn char_pos(src: &str, byte: usize) -> usize {
    src.get(..byte).map_or(0, |s| s.chars().count())
}

/// One token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Integer literal.
    Int(i64),
    /// Floating-point literal (always finite).
    Float(f64),
    /// String literal with quotes removed and doubled quotes collapsed.
    Str(String),
    /// A bare word: a name, a keyword (`and`, `true`, `new`, ...) or a method name.
    Ident(String),
    /// `#name`.
    Var(String),
    Dot,
    SafeDot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Question,
    Elvis,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Assign,
    PlusPlus,
    MinusMinus,
    At,
    Amp,
    Dollar,
    Eof,
}

impl Tok {
    /// How the token is shown in error messages.
    pub(crate) fn describe(&self) -> String {
        let sym = match self {
            Tok::Int(i) => return format!("number {i}"),
            Tok::Float(f) => return format!("number {f}"),
            Tok::Str(s) => return format!("string '{}'", crate::error::shorten(s, 40)),
            Tok::Ident(s) => return format!("'{s}'"),
            Tok::Var(s) => return format!("'#{s}'"),
            Tok::Eof => return "the end of the expression".to_string(),
            Tok::Dot => ".",
            Tok::SafeDot => "?.",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Question => "?",
            Tok::Elvis => "?:",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Caret => "^",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::Assign => "=",
            Tok::PlusPlus => "++",
            Tok::MinusMinus => "--",
            Tok::At => "@",
            Tok::Amp => "&",
            Tok::Dollar => "$",
        };
        format!("'{sym}'")
    }
}

/// A token and its byte span in the template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Lexes `src[start..end]`. The returned list always ends with [`Tok::Eof`].
pub(crate) fn lex(src: &str, start: usize, end: usize) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok_start = i;
        let next = bytes.get(i + 1).copied().filter(|_| i + 1 < end);
        let (tok, len) = match b {
            b'0'..=b'9' => {
                let (tok, len) = lex_number(src, i, end)?;
                (tok, len)
            }
            b'\'' | b'"' => {
                let (s, len) = lex_string(src, i, end, b)?;
                (Tok::Str(s), len)
            }
            b'#' => {
                let name_start = i + 1;
                let mut j = name_start;
                if j < end && is_ident_start(bytes[j]) {
                    while j < end && is_ident_char(bytes[j]) {
                        j += 1;
                    }
                    (Tok::Var(src[name_start..j].to_string()), j - i)
                } else {
                    return Err(ParseError::Unexpected {
                        position: char_pos(src, i),
                        expected: "a helper or variable name after '#'".into(),
                        found: next_description(src, name_start, end),
                    });
                }
            }
            _ if is_ident_start(b) => {
                let mut j = i;
                while j < end && is_ident_char(bytes[j]) {
                    j += 1;
                }
                (Tok::Ident(src[i..j].to_string()), j - i)
            }
            b'.' => (Tok::Dot, 1),
            b'?' => match next {
                Some(b'.') => (Tok::SafeDot, 2),
                Some(b':') => (Tok::Elvis, 2),
                _ => (Tok::Question, 1),
            },
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b':' => (Tok::Colon, 1),
            b'+' => match next {
                Some(b'+') => (Tok::PlusPlus, 2),
                _ => (Tok::Plus, 1),
            },
            b'-' => match next {
                Some(b'-') => (Tok::MinusMinus, 2),
                _ => (Tok::Minus, 1),
            },
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'^' => (Tok::Caret, 1),
            b'=' => match next {
                Some(b'=') => (Tok::EqEq, 2),
                _ => (Tok::Assign, 1),
            },
            b'!' => match next {
                Some(b'=') => (Tok::NotEq, 2),
                _ => (Tok::Bang, 1),
            },
            b'<' => match next {
                Some(b'=') => (Tok::Le, 2),
                _ => (Tok::Lt, 1),
            },
            b'>' => match next {
                Some(b'=') => (Tok::Ge, 2),
                _ => (Tok::Gt, 1),
            },
            b'&' => match next {
                Some(b'&') => (Tok::AndAnd, 2),
                _ => (Tok::Amp, 1),
            },
            b'|' => match next {
                Some(b'|') => (Tok::OrOr, 2),
                _ => {
                    return Err(ParseError::UnexpectedChar {
                        position: char_pos(src, i),
                        ch: '|',
                    });
                }
            },
            b'@' => (Tok::At, 1),
            b'$' => (Tok::Dollar, 1),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(ParseError::UnexpectedChar {
                    position: char_pos(src, i),
                    ch,
                });
            }
        };
        i += len;
        toks.push(Token {
            tok,
            start: tok_start,
            end: i,
        });
    }
    toks.push(Token {
        tok: Tok::Eof,
        start: end,
        end,
    });
    Ok(toks)
}

fn next_description(src: &str, at: usize, end: usize) -> String {
    match src.get(at..end).and_then(|s| s.chars().next()) {
        Some(c) => format!("'{c}'"),
        None => "the end of the expression".into(),
    }
}

/// Lexes a number starting at `i`: decimal integers, `0x` hex integers, decimals with a
/// fraction and/or exponent, and Java suffixes (`L` for integers, `f`/`d` for floats).
fn lex_number(src: &str, i: usize, end: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let at = |j: usize| if j < end { Some(bytes[j]) } else { None };
    let bad = |j: usize, reason: &str| ParseError::BadNumber {
        position: char_pos(src, i),
        text: src[i..j.min(end)].to_string(),
        reason: reason.to_string(),
    };
    let mut j = i;
    if bytes[i] == b'0' && matches!(at(i + 1), Some(b'x' | b'X')) {
        j = i + 2;
        while at(j).is_some_and(|b| b.is_ascii_hexdigit()) {
            j += 1;
        }
        let digits = &src[i + 2..j];
        if matches!(at(j), Some(b'L' | b'l')) {
            j += 1;
        }
        if at(j).is_some_and(is_ident_char) {
            return Err(bad(j + 1, "unexpected letter in hexadecimal number"));
        }
        let v = i64::from_str_radix(digits, 16).map_err(|_| bad(j, "not a 64-bit integer"))?;
        return Ok((Tok::Int(v), j - i));
    }
    while at(j).is_some_and(|b| b.is_ascii_digit()) {
        j += 1;
    }
    let mut is_float = false;
    if at(j) == Some(b'.') && at(j + 1).is_some_and(|b| b.is_ascii_digit()) {
        is_float = true;
        j += 1;
        while at(j).is_some_and(|b| b.is_ascii_digit()) {
            j += 1;
        }
    }
    if matches!(at(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(at(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if at(k).is_some_and(|b| b.is_ascii_digit()) {
            is_float = true;
            j = k;
            while at(j).is_some_and(|b| b.is_ascii_digit()) {
                j += 1;
            }
        }
    }
    let text_end = j;
    let mut force_float = false;
    match at(j) {
        Some(b'L' | b'l') if !is_float => j += 1,
        Some(b'f' | b'F' | b'd' | b'D') => {
            force_float = true;
            j += 1;
        }
        _ => {}
    }
    if at(j).is_some_and(is_ident_char) {
        return Err(bad(j + 1, "unexpected letter in number"));
    }
    let text = &src[i..text_end];
    if is_float || force_float {
        let v: f64 = text.parse().map_err(|_| bad(j, "not a number"))?;
        if !v.is_finite() {
            return Err(bad(j, "too large"));
        }
        Ok((Tok::Float(v), j - i))
    } else {
        let v: i64 = text
            .parse()
            .map_err(|_| bad(j, "larger than a 64-bit integer"))?;
        Ok((Tok::Int(v), j - i))
    }
}

/// Lexes a string literal quoted with `quote`; a doubled quote stands for one quote character.
/// SpEL has no backslash escapes, and neither does Ferry.
fn lex_string(src: &str, i: usize, end: usize, quote: u8) -> Result<(String, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut out = String::new();
    let mut j = i + 1;
    let mut seg_start = j;
    loop {
        if j >= end {
            return Err(ParseError::UnterminatedString {
                position: char_pos(src, i),
            });
        }
        if bytes[j] == quote {
            out.push_str(&src[seg_start..j]);
            if j + 1 < end && bytes[j + 1] == quote {
                out.push(quote as char);
                j += 2;
                seg_start = j;
                continue;
            }
            return Ok((out, j + 1 - i));
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s, 0, s.len())
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn lexes_operators_and_literals() {
        use Tok::*;
        assert_eq!(
            toks("a?.b ?: 'x''y' == \"q\"\"\" && !c || d != 1.5e1"),
            vec![
                Ident("a".into()),
                SafeDot,
                Ident("b".into()),
                Elvis,
                Str("x'y".into()),
                EqEq,
                Str("q\"".into()),
                AndAnd,
                Bang,
                Ident("c".into()),
                OrOr,
                Ident("d".into()),
                NotEq,
                Float(15.0),
                Eof
            ]
        );
        assert_eq!(
            toks("list.?[x].![#this]"),
            vec![
                Ident("list".into()),
                Dot,
                Question,
                LBracket,
                Ident("x".into()),
                RBracket,
                Dot,
                Bang,
                LBracket,
                Var("this".into()),
                RBracket,
                Eof
            ]
        );
        assert_eq!(
            toks("0x1F 10L 2f 3.25"),
            vec![Int(31), Int(10), Float(2.0), Float(3.25), Eof]
        );
        assert_eq!(
            toks("a[0].b"),
            vec![
                Ident("a".into()),
                LBracket,
                Int(0),
                RBracket,
                Dot,
                Ident("b".into()),
                Eof
            ]
        );
        assert_eq!(
            toks("a = b++ --c"),
            vec![
                Ident("a".into()),
                Assign,
                Ident("b".into()),
                PlusPlus,
                MinusMinus,
                Ident("c".into()),
                Eof
            ]
        );
    }

    #[test]
    fn lex_errors_name_the_position() {
        let e = lex("1 + 'abc", 0, 8).unwrap_err();
        assert_eq!(e, ParseError::UnterminatedString { position: 4 });
        let e = lex("a | b", 0, 5).unwrap_err();
        assert_eq!(
            e,
            ParseError::UnexpectedChar {
                position: 2,
                ch: '|'
            }
        );
        let e = lex("é", 0, 2).unwrap_err();
        assert_eq!(
            e,
            ParseError::UnexpectedChar {
                position: 0,
                ch: 'é'
            }
        );
        assert!(matches!(
            lex("99999999999999999999", 0, 20),
            Err(ParseError::BadNumber { .. })
        ));
        assert!(matches!(
            lex("1e999", 0, 5),
            Err(ParseError::BadNumber { .. })
        ));
        assert!(matches!(
            lex("12abc", 0, 5),
            Err(ParseError::BadNumber { .. })
        ));
        assert!(matches!(
            lex("# x", 0, 3),
            Err(ParseError::Unexpected { .. })
        ));
    }

    #[test]
    fn spans_are_absolute_and_unicode_positions_are_characters() {
        let src = "é${ 'ü' + x }";
        let start = src.find("${").unwrap() + 2;
        let end = src.len() - 1;
        let t = lex(src, start, end).unwrap();
        assert_eq!(char_pos(src, t[2].start), 10);
        assert_eq!(t[0].tok, Tok::Str("ü".into()));
    }
}
