//! Parser: a Pratt (precedence-climbing) parser from tokens to [`Expr`], with a nesting limit.
//!
//! Precedence, lowest first (as in SpEL):
//! `?:` ternary and elvis (right-associative) < `or ||` < `and &&` <
//! `== != < <= > >= matches` (and `eq ne lt le gt ge`) < `+ -` < `* / % div mod` <
//! `^` (right-associative) < prefix `! not - +` < postfix `.name`, `?.name`, `[i]`,
//! `.?[c]`, `.^[c]`, `.$[c]`, `.![e]`, `.method(args)`.
//!
//! Two limits keep hostile input from exhausting the stack: the recursion depth of the parser
//! itself, and the height of the tree it builds (which also bounds the evaluator's recursion).
//! Both are [`crate::Limits::max_depth`].

use serde_json::Value;

use crate::ast::{BinOp, Expr, ExprKind, SelectKind, Span, UnaryOp};
use crate::error::ParseError;
use crate::helpers::Helper;
use crate::lexer::{Tok, Token, char_pos, lex};
use crate::{Limits, methods};

/// Parses the expression text `src[start..end]` (the inside of one `${...}`).
pub(crate) fn parse_expression(
    src: &str,
    start: usize,
    end: usize,
    limits: &Limits,
) -> Result<Expr, ParseError> {
    let toks = lex(src, start, end)?;
    let mut p = Parser {
        toks,
        i: 0,
        src,
        depth: 0,
        max_depth: limits.effective_max_depth(),
    };
    let expr = p.parse_bp(0)?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(p.unexpected(t, "an operator or the end of the expression"));
    }
    Ok(expr)
}

struct Parser<'s> {
    toks: Vec<Token>,
    i: usize,
    src: &'s str,
    depth: usize,
    max_depth: usize,
}

/// An infix operator found in operator position.
enum Infix {
    Ternary,
    Elvis,
    Bin(BinOp),
}

impl Infix {
    /// (left binding power, right binding power); right-associative operators have l > r.
    fn binding_power(&self) -> (u8, u8) {
        match self {
            Infix::Ternary | Infix::Elvis => (2, 1),
            Infix::Bin(op) => match op {
                BinOp::Or => (3, 4),
                BinOp::And => (5, 6),
                BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::Matches => (7, 8),
                BinOp::Add | BinOp::Sub => (9, 10),
                BinOp::Mul | BinOp::Div | BinOp::Rem => (11, 12),
                BinOp::Pow => (14, 13),
            },
        }
    }
}

fn keyword(s: &str, kw: &str) -> bool {
    s.eq_ignore_ascii_case(kw)
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Token {
        match self.toks.get(self.i + n).or_else(|| self.toks.last()) {
            Some(t) => t.clone(),
            None => Token {
                tok: Tok::Eof,
                start: self.src.len(),
                end: self.src.len(),
            },
        }
    }

    fn bump(&mut self) -> Token {
        let t = self.peek();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn pos(&self, byte: usize) -> usize {
        char_pos(self.src, byte)
    }

    fn unexpected(&self, t: Token, expected: &str) -> ParseError {
        if t.tok == Tok::Dollar
            && self
                .toks
                .get(self.i + 1)
                .is_some_and(|n| n.tok == Tok::LBrace)
        {
            return ParseError::Unsupported {
                position: self.pos(t.start),
                what: "a nested '${' (write the inner expression directly, without '${ }')".into(),
            };
        }
        ParseError::Unexpected {
            position: self.pos(t.start),
            expected: expected.to_string(),
            found: t.tok.describe(),
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Token, ParseError> {
        let t = self.peek();
        if t.tok == tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(t, what))
        }
    }

    /// Records one level of parser recursion; fails past the depth limit.
    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(ParseError::TooDeep {
                position: self.pos(at),
                limit: self.max_depth,
            });
        }
        Ok(())
    }

    /// Builds a node, refusing trees taller than the depth limit.
    fn node(&self, kind: ExprKind, start: usize, end: usize) -> Result<Expr, ParseError> {
        let depth = kind.child_depth() + 1;
        if depth > self.max_depth {
            return Err(ParseError::TooDeep {
                position: self.pos(start),
                limit: self.max_depth,
            });
        }
        Ok(Expr {
            kind,
            span: Span { start, end },
            depth,
        })
    }

    // The recursive descent below is split into many small functions on purpose: the stack
    // used per nesting level is the sum of the frames on the recursive path, and small frames
    // keep deep (but allowed) nesting cheap even in unoptimised builds.

    fn parse_bp(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        self.enter(self.peek().start)?;
        let r = self.parse_bp_inner(min_bp);
        self.depth -= 1;
        r
    }

    fn parse_bp_inner(&mut self, min_bp: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.parse_unary()?;
        loop {
            let t = self.peek();
            let Some(op) = self.infix(&t)? else { break };
            let (l_bp, r_bp) = op.binding_power();
            if l_bp < min_bp {
                break;
            }
            self.bump();
            lhs = self.parse_infix(lhs, op, r_bp)?;
        }
        Ok(lhs)
    }

    #[inline(never)]
    fn parse_infix(&mut self, lhs: Expr, op: Infix, r_bp: u8) -> Result<Expr, ParseError> {
        let start = lhs.span.start;
        match op {
            Infix::Ternary => {
                let then = self.parse_bp(0)?;
                self.expect(Tok::Colon, "':' of the '? :' operator")?;
                let otherwise = self.parse_bp(r_bp)?;
                let end = otherwise.span.end;
                let kind = ExprKind::Ternary {
                    cond: Box::new(lhs),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                };
                self.node(kind, start, end)
            }
            Infix::Elvis => {
                let default = self.parse_bp(r_bp)?;
                let end = default.span.end;
                self.node(
                    ExprKind::Elvis {
                        value: Box::new(lhs),
                        default: Box::new(default),
                    },
                    start,
                    end,
                )
            }
            Infix::Bin(op) => {
                let rhs = self.parse_bp(r_bp)?;
                let end = rhs.span.end;
                self.node(
                    ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    start,
                    end,
                )
            }
        }
    }

    /// Classifies the token in operator position. `Ok(None)` means "not an operator" (the
    /// caller stops); forbidden SpEL operators are errors here.
    fn infix(&self, t: &Token) -> Result<Option<Infix>, ParseError> {
        let op = match &t.tok {
            Tok::Question => Infix::Ternary,
            Tok::Elvis => Infix::Elvis,
            Tok::OrOr => Infix::Bin(BinOp::Or),
            Tok::AndAnd => Infix::Bin(BinOp::And),
            Tok::EqEq => Infix::Bin(BinOp::Eq),
            Tok::NotEq => Infix::Bin(BinOp::Ne),
            Tok::Lt => Infix::Bin(BinOp::Lt),
            Tok::Le => Infix::Bin(BinOp::Le),
            Tok::Gt => Infix::Bin(BinOp::Gt),
            Tok::Ge => Infix::Bin(BinOp::Ge),
            Tok::Plus => Infix::Bin(BinOp::Add),
            Tok::Minus => Infix::Bin(BinOp::Sub),
            Tok::Star => Infix::Bin(BinOp::Mul),
            Tok::Slash => Infix::Bin(BinOp::Div),
            Tok::Percent => Infix::Bin(BinOp::Rem),
            Tok::Caret => Infix::Bin(BinOp::Pow),
            Tok::Assign | Tok::PlusPlus | Tok::MinusMinus => {
                return Err(ParseError::Assignment {
                    position: self.pos(t.start),
                });
            }
            Tok::Ident(w) => return self.word_infix(w, t.start),
            _ => return Ok(None),
        };
        Ok(Some(op))
    }

    /// Word operators (`and`, `eq`, `div`, `matches`, ...), case-insensitive as in SpEL.
    fn word_infix(&self, w: &str, at: usize) -> Result<Option<Infix>, ParseError> {
        const WORDS: &[(&str, BinOp)] = &[
            ("or", BinOp::Or),
            ("and", BinOp::And),
            ("eq", BinOp::Eq),
            ("ne", BinOp::Ne),
            ("lt", BinOp::Lt),
            ("le", BinOp::Le),
            ("gt", BinOp::Gt),
            ("ge", BinOp::Ge),
            ("div", BinOp::Div),
            ("mod", BinOp::Rem),
            ("matches", BinOp::Matches),
        ];
        if let Some((_, op)) = WORDS.iter().find(|(kw, _)| keyword(w, kw)) {
            return Ok(Some(Infix::Bin(*op)));
        }
        if keyword(w, "instanceof") {
            return Err(ParseError::Instanceof {
                position: self.pos(at),
            });
        }
        if keyword(w, "between") {
            return Err(ParseError::Unsupported {
                position: self.pos(at),
                what: "the 'between' operator (write 'x >= a and x <= b')".into(),
            });
        }
        Ok(None)
    }

    fn parse_unary(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek();
        let op = match &t.tok {
            Tok::Bang => UnaryOp::Not,
            Tok::Ident(w) if keyword(w, "not") => UnaryOp::Not,
            Tok::Minus => UnaryOp::Neg,
            Tok::Plus => UnaryOp::Plus,
            Tok::PlusPlus | Tok::MinusMinus => {
                return Err(ParseError::Assignment {
                    position: self.pos(t.start),
                });
            }
            _ => {
                let primary = self.parse_primary()?;
                return self.parse_postfix(primary);
            }
        };
        self.parse_prefix_op(op, t.start)
    }

    #[inline(never)]
    fn parse_prefix_op(&mut self, op: UnaryOp, start: usize) -> Result<Expr, ParseError> {
        self.bump();
        self.enter(start)?;
        let operand = self.parse_unary();
        self.depth -= 1;
        let operand = operand?;
        let end = operand.span.end;
        self.node(
            ExprKind::Unary {
                op,
                operand: Box::new(operand),
            },
            start,
            end,
        )
    }

    fn parse_postfix(&mut self, mut e: Expr) -> Result<Expr, ParseError> {
        loop {
            e = match self.peek().tok {
                Tok::Dot => self.parse_dot(e, false)?,
                Tok::SafeDot => self.parse_dot(e, true)?,
                Tok::LBracket => self.parse_index(e, false)?,
                _ => return Ok(e),
            };
        }
    }

    /// `[index]` after a value (`safe`: after `?.`). The opening token is not yet consumed.
    #[inline(never)]
    fn parse_index(&mut self, target: Expr, safe: bool) -> Result<Expr, ParseError> {
        let start = target.span.start;
        self.bump();
        let index = self.parse_bp(0)?;
        let close = self.expect(Tok::RBracket, "']'")?;
        let kind = ExprKind::Index {
            target: Box::new(target),
            index: Box::new(index),
            safe,
        };
        self.node(kind, start, close.end)
    }

    /// What follows `.` or `?.`: a property, a method call, a selection/projection, or (after
    /// `?.`) an index.
    #[inline(never)]
    fn parse_dot(&mut self, target: Expr, safe: bool) -> Result<Expr, ParseError> {
        self.bump();
        let n = self.peek();
        match n.tok {
            Tok::Ident(name) => {
                self.bump();
                if self.peek().tok == Tok::LParen {
                    self.parse_method_call(Some(target), name, n.start, safe)
                } else {
                    let start = target.span.start;
                    self.node(
                        ExprKind::Prop {
                            target: Box::new(target),
                            name,
                            safe,
                        },
                        start,
                        n.end,
                    )
                }
            }
            Tok::Question | Tok::Caret | Tok::Dollar | Tok::Bang
                if self.peek_at(1).tok == Tok::LBracket =>
            {
                self.parse_selection(target, n.tok, safe)
            }
            Tok::LBracket if safe => self.parse_index(target, true),
            _ => Err(self.unexpected(
                n,
                "a property or method name, or '?[', '^[', '$[', '![' after '.'",
            )),
        }
    }

    /// `.?[c]`, `.^[c]`, `.$[c]` or `.![e]`; `which` is the token after the dot.
    #[inline(never)]
    fn parse_selection(
        &mut self,
        target: Expr,
        which: Tok,
        safe: bool,
    ) -> Result<Expr, ParseError> {
        let start = target.span.start;
        self.bump();
        self.bump();
        let inner = Box::new(self.parse_bp(0)?);
        let close = self.expect(Tok::RBracket, "']'")?;
        let target = Box::new(target);
        let kind = match which {
            Tok::Bang => ExprKind::Project {
                target,
                expr: inner,
                safe,
            },
            Tok::Caret => ExprKind::Select {
                target,
                kind: SelectKind::First,
                cond: inner,
                safe,
            },
            Tok::Dollar => ExprKind::Select {
                target,
                kind: SelectKind::Last,
                cond: inner,
                safe,
            },
            _ => ExprKind::Select {
                target,
                kind: SelectKind::All,
                cond: inner,
                safe,
            },
        };
        self.node(kind, start, close.end)
    }

    /// `name(args)` with the name already consumed; `target` None means the active context.
    #[inline(never)]
    fn parse_method_call(
        &mut self,
        target: Option<Expr>,
        name: String,
        name_start: usize,
        safe: bool,
    ) -> Result<Expr, ParseError> {
        self.check_method(&name, name_start)?;
        let start = target.as_ref().map_or(name_start, |t| t.span.start);
        let (args, end) = self.parse_args()?;
        let kind = ExprKind::Method {
            target: target.map(Box::new),
            name,
            args,
            safe,
        };
        self.node(kind, start, end)
    }

    fn check_method(&self, name: &str, at: usize) -> Result<(), ParseError> {
        if methods::is_known_method(name) {
            Ok(())
        } else {
            Err(ParseError::UnknownMethod {
                position: self.pos(at),
                name: name.to_string(),
                known: methods::all_method_names(),
            })
        }
    }

    /// Parses `( a, b, ... )`, returning the arguments and the end of the `)`.
    fn parse_args(&mut self) -> Result<(Vec<Expr>, usize), ParseError> {
        self.expect(Tok::LParen, "'('")?;
        let mut args = Vec::new();
        if self.peek().tok == Tok::RParen {
            let close = self.bump();
            return Ok((args, close.end));
        }
        loop {
            args.push(self.parse_bp(0)?);
            let t = self.bump();
            match t.tok {
                Tok::Comma => {}
                Tok::RParen => return Ok((args, t.end)),
                _ => return Err(self.unexpected(t, "',' or ')' in the argument list")),
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().tok {
            Tok::LParen => self.parse_paren(),
            Tok::LBrace => self.parse_inline(),
            Tok::LBracket => self.parse_context_index(),
            Tok::Var(_) => self.parse_var(),
            Tok::Ident(_) => self.parse_word(),
            _ => self.parse_literal(),
        }
    }

    #[inline(never)]
    fn parse_paren(&mut self) -> Result<Expr, ParseError> {
        let open = self.bump();
        let mut inner = self.parse_bp(0)?;
        let close = self.expect(Tok::RParen, "')'")?;
        inner.span = Span {
            start: open.start,
            end: close.end,
        };
        Ok(inner)
    }

    /// `['key']` at the start indexes the active context object, as in SpEL.
    #[inline(never)]
    fn parse_context_index(&mut self) -> Result<Expr, ParseError> {
        let start = self.peek().start;
        let this = self.node(ExprKind::This, start, start)?;
        self.parse_index(this, false)
    }

    /// Number, string, or an error for anything else in value position.
    #[inline(never)]
    fn parse_literal(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek();
        let value = match t.tok {
            Tok::Int(i) => Value::from(i),
            Tok::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(ParseError::BadNumber {
                        position: self.pos(t.start),
                        text: self.src.get(t.start..t.end).unwrap_or_default().to_string(),
                        reason: "not finite".into(),
                    });
                }
            },
            Tok::Str(s) => Value::String(s),
            Tok::At | Tok::Amp => {
                return Err(ParseError::BeanReference {
                    position: self.pos(t.start),
                });
            }
            Tok::Assign => {
                return Err(ParseError::Assignment {
                    position: self.pos(t.start),
                });
            }
            _ => return Err(self.unexpected(t, "a value")),
        };
        self.bump();
        self.node(ExprKind::Lit(value), t.start, t.end)
    }

    /// `#this`, `#root` or `#helper(args)`.
    #[inline(never)]
    fn parse_var(&mut self) -> Result<Expr, ParseError> {
        let t = self.bump();
        let Tok::Var(name) = t.tok else {
            return Err(self.unexpected(t, "a variable"));
        };
        let start = t.start;
        if self.peek().tok == Tok::LParen {
            let Some(helper) = Helper::from_name(&name) else {
                return Err(ParseError::UnknownFunction {
                    position: self.pos(start),
                    name,
                    known: Helper::all_names(),
                });
            };
            let (args, close) = self.parse_args()?;
            let (min, max) = helper.arity();
            if args.len() < min || args.len() > max {
                return Err(ParseError::Arity {
                    position: self.pos(start),
                    name,
                    expected: helper.arity_text(),
                    given: args.len(),
                });
            }
            self.node(ExprKind::Call { helper, args }, start, close)
        } else if name == "this" {
            self.node(ExprKind::This, start, t.end)
        } else if name == "root" {
            self.node(ExprKind::Root, start, t.end)
        } else {
            Err(ParseError::UnknownVariable {
                position: self.pos(start),
                name,
            })
        }
    }

    /// A word in value position: `true`/`false`/`null`, the forbidden `new` and `T(`, a method
    /// call on the active context, or a name.
    #[inline(never)]
    fn parse_word(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek();
        let Tok::Ident(name) = t.tok else {
            return Err(self.unexpected(t, "a name"));
        };
        let (start, end) = (t.start, t.end);
        let next = self.peek_at(1).tok;
        let literal = if keyword(&name, "true") {
            Some(Value::Bool(true))
        } else if keyword(&name, "false") {
            Some(Value::Bool(false))
        } else if keyword(&name, "null") {
            Some(Value::Null)
        } else {
            None
        };
        if let Some(v) = literal {
            self.bump();
            return self.node(ExprKind::Lit(v), start, end);
        }
        if keyword(&name, "new") {
            return Err(ParseError::Constructor {
                position: self.pos(start),
            });
        }
        if name == "T" && next == Tok::LParen {
            return Err(ParseError::TypeReference {
                position: self.pos(start),
            });
        }
        self.bump();
        if next == Tok::LParen {
            return self.parse_method_call(None, name, start, false);
        }
        self.node(ExprKind::Name(name), start, end)
    }

    /// Parses `{}` (empty list), `{:}` (empty map), `{a, b}` (list) or `{k: v}` (map).
    #[inline(never)]
    fn parse_inline(&mut self) -> Result<Expr, ParseError> {
        let open = self.bump();
        let start = open.start;
        if self.peek().tok == Tok::RBrace {
            let close = self.bump();
            return self.node(ExprKind::List(Vec::new()), start, close.end);
        }
        if self.peek().tok == Tok::Colon && self.peek_at(1).tok == Tok::RBrace {
            self.bump();
            let close = self.bump();
            return self.node(ExprKind::Map(Vec::new()), start, close.end);
        }
        let is_map = matches!(
            self.peek().tok,
            Tok::Ident(_) | Tok::Str(_) | Tok::Int(_) | Tok::Float(_)
        ) && self.peek_at(1).tok == Tok::Colon;
        if is_map {
            self.parse_map_entries(start)
        } else {
            self.parse_list_items(start)
        }
    }

    fn parse_map_entries(&mut self, start: usize) -> Result<Expr, ParseError> {
        let mut entries: Vec<(String, Expr)> = Vec::new();
        loop {
            let k = self.bump();
            let key = match k.tok {
                Tok::Ident(s) | Tok::Str(s) => s,
                Tok::Int(i) => i.to_string(),
                Tok::Float(f) => f.to_string(),
                _ => {
                    return Err(ParseError::BadMapKey {
                        position: self.pos(k.start),
                    });
                }
            };
            self.expect(Tok::Colon, "':' after the map key")?;
            let value = self.parse_bp(0)?;
            // Later keys win, as in a Java LinkedHashMap.
            entries.retain(|(existing, _)| *existing != key);
            entries.push((key, value));
            let t = self.bump();
            match t.tok {
                Tok::Comma => {}
                Tok::RBrace => return self.node(ExprKind::Map(entries), start, t.end),
                _ => return Err(self.unexpected(t, "',' or '}' in the inline map")),
            }
        }
    }

    fn parse_list_items(&mut self, start: usize) -> Result<Expr, ParseError> {
        let mut items = Vec::new();
        loop {
            items.push(self.parse_bp(0)?);
            let t = self.bump();
            match t.tok {
                Tok::Comma => {}
                Tok::RBrace => return self.node(ExprKind::List(items), start, t.end),
                _ => return Err(self.unexpected(t, "',' or '}' in the inline list")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Expr, ParseError> {
        parse_expression(s, 0, s.len(), &Limits::default())
    }

    /// Renders a tree as an S-expression so tests can state the expected shape compactly.
    fn sexp(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Lit(v) => v.to_string(),
            ExprKind::List(items) => {
                format!(
                    "(list {})",
                    items.iter().map(sexp).collect::<Vec<_>>().join(" ")
                )
            }
            ExprKind::Map(entries) => format!(
                "(map {})",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}={}", sexp(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            ExprKind::Root => "#root".into(),
            ExprKind::This => "#this".into(),
            ExprKind::Name(n) => n.clone(),
            ExprKind::Prop { target, name, safe } => {
                format!(
                    "({} {} {name})",
                    if *safe { "?." } else { "." },
                    sexp(target)
                )
            }
            ExprKind::Index {
                target,
                index,
                safe,
            } => {
                format!(
                    "({} {} {})",
                    if *safe { "?[]" } else { "[]" },
                    sexp(target),
                    sexp(index)
                )
            }
            ExprKind::Method {
                target, name, args, ..
            } => format!(
                "(call {} {name}{})",
                target.as_ref().map_or("_".to_string(), |t| sexp(t)),
                args.iter()
                    .map(|a| format!(" {}", sexp(a)))
                    .collect::<String>()
            ),
            ExprKind::Call { helper, args } => format!(
                "(#{}{})",
                helper.name(),
                args.iter()
                    .map(|a| format!(" {}", sexp(a)))
                    .collect::<String>()
            ),
            ExprKind::Select {
                target, kind, cond, ..
            } => {
                format!("(select{kind:?} {} {})", sexp(target), sexp(cond))
            }
            ExprKind::Project { target, expr, .. } => {
                format!("(project {} {})", sexp(target), sexp(expr))
            }
            ExprKind::Unary { op, operand } => format!("({op:?} {})", sexp(operand)),
            ExprKind::Binary { op, lhs, rhs } => {
                format!("({} {} {})", op.symbol(), sexp(lhs), sexp(rhs))
            }
            ExprKind::Ternary {
                cond,
                then,
                otherwise,
            } => {
                format!("(? {} {} {})", sexp(cond), sexp(then), sexp(otherwise))
            }
            ExprKind::Elvis { value, default } => format!("(?: {} {})", sexp(value), sexp(default)),
        }
    }

    #[test]
    fn precedence_and_shapes() {
        let cases = [
            ("1 + 2 * 3", "(+ 1 (* 2 3))"),
            ("1 - 2 - 3", "(- (- 1 2) 3)"),
            ("2 ^ 3 ^ 2", "(^ 2 (^ 3 2))"),
            ("-2 ^ 2", "(^ (Neg 2) 2)"),
            ("a or b and c", "(or a (and b c))"),
            ("a || b && !c", "(or a (and b (Not c)))"),
            ("not a == b", "(== (Not a) b)"),
            ("a == 1 ? 'x' : 'y'", "(? (== a 1) \"x\" \"y\")"),
            ("a ? b : c ? d : e", "(? a b (? c d e))"),
            ("a ?: b ?: 'c'", "(?: a (?: b \"c\"))"),
            ("x eq 1 and y GT 2", "(and (== x 1) (> y 2))"),
            ("a div 2 mod 3", "(% (/ a 2) 3)"),
            ("a.b?.c['d'][0]", "([] ([] (?. (. a b) c) \"d\") 0)"),
            ("a?.['b']", "(?[] a \"b\")"),
            ("s matches '^a.*'", "(matches s \"^a.*\")"),
            (
                "list.?[x > 1].![name]",
                "(project (selectAll list (> x 1)) name)",
            ),
            ("list.^[x].$[y]", "(selectLast (selectFirst list x) y)"),
            ("list?.?[x]", "(selectAll list x)"),
            ("{1, 2, {3}}", "(list 1 2 (list 3))"),
            ("{}", "(list )"),
            ("{:}", "(map )"),
            ("{a: 1, 'b c': 2, 3: x, a: 4}", "(map b c=2 3=x a=4)"),
            ("#root['k']", "([] #root \"k\")"),
            ("['k']", "([] #this \"k\")"),
            ("#this.size()", "(call #this size)"),
            ("isEmpty()", "(call _ isEmpty)"),
            ("'a'.substring(1, 2)", "(call \"a\" substring 1 2)"),
            ("#stage('Deploy').status", "(. (#stage \"Deploy\") status)"),
            ("TRUE and False or NULL", "(or (and true false) null)"),
            ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
            ("T", "T"),
            ("a.new", "(. a new)"),
        ];
        for (src, want) in cases {
            let e = parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
            assert_eq!(sexp(&e), want, "{src}");
        }
    }

    #[test]
    fn errors_are_precise() {
        let cases = [
            ("T(java.lang.Runtime)", "type references are not allowed"),
            ("new java.io.File('x')", "constructors are not allowed"),
            ("@bean", "bean references are not allowed"),
            ("&factory", "bean references are not allowed"),
            ("a = 1", "assignment is not allowed"),
            ("a++", "assignment is not allowed"),
            ("--a", "assignment is not allowed"),
            ("a instanceof b", "'instanceof' is not allowed"),
            ("x between {1, 2}", "'between' operator"),
            ("#foo", "unknown variable '#foo'"),
            ("#exec('id')", "unknown helper function '#exec'"),
            (
                "#stage()",
                "helper '#stage' takes 1 argument but was given 0",
            ),
            ("''.getClass()", "unknown method 'getClass'"),
            ("getClass()", "unknown method 'getClass'"),
            (
                "1 +",
                "expected a value but found the end of the expression at position 3",
            ),
            ("(1", "expected ')'"),
            (
                "a b",
                "expected an operator or the end of the expression but found 'b' at position 2",
            ),
            ("a.", "property or method name"),
            ("{a: 1, b}", "expected ':' after the map key"),
            ("{1, 2", "',' or '}'"),
            ("f(1 2)", "unknown method 'f'"),
            ("'a'.contains(1 2)", "',' or ')'"),
            ("a ? b", "':' of the '? :' operator"),
            ("${x}", "nested '${'"),
        ];
        for (src, want) in cases {
            let err = parse(src).expect_err(src).to_string();
            assert!(err.contains(want), "{src}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn depth_limits_hold_for_every_kind_of_nesting() {
        let n = 10_000;
        let inputs = [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1{}", "{".repeat(n), "}".repeat(n)),
            format!("{}true", "!".repeat(n)),
            format!("{}1", "- ".repeat(n)),
            format!("1{}", " + 1".repeat(n)),
            format!("a{}", ".b".repeat(n)),
            format!("a{}", "[0]".repeat(n)),
            format!("{}1", "a ? b : ".repeat(n)),
            "a[".repeat(n),
            "'x'.contains(".repeat(n),
            "{a: ".repeat(n),
            "#toInt(".repeat(n),
            format!("{}1", "not ".repeat(n)),
            format!("{}1", "a ?: ".repeat(n)),
            format!("2{}", " ^ 2".repeat(n)),
            format!("l{}", ".?[true]".repeat(n)),
            format!("l{}", ".![x]".repeat(n)),
            format!("l{}", "?.x".repeat(n)),
            format!("{}1{}", "{1}.![".repeat(n), "]".repeat(n)),
        ];
        for src in inputs {
            let err = parse(&src).expect_err("must fail");
            assert!(
                matches!(err, ParseError::TooDeep { limit: 64, .. }),
                "{}: {err}",
                &src[..20]
            );
        }
        // Within the limit, nesting is fine.
        let ok = format!("{}1{}", "(".repeat(30), ")".repeat(30));
        assert!(parse(&ok).is_ok());
        let ok = format!("1{}", " + 1".repeat(40));
        assert!(parse(&ok).is_ok());
    }
}
