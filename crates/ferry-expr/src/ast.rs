//! Syntax tree of one expression, as produced by the parser and walked by the evaluator.

use serde_json::Value;

use crate::helpers::Helper;

/// Byte span of a node in the template string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// One node. `depth` is the height of the subtree (a leaf has depth 1); the parser refuses to
/// build trees higher than the depth limit, so the evaluator's recursion (and `Drop`) is bounded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    pub depth: usize,
}

/// Which elements a selection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectKind {
    /// `.?[cond]`: every matching element.
    All,
    /// `.^[cond]`: the first matching element.
    First,
    /// `.$[cond]`: the last matching element.
    Last,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Not,
    Neg,
    Plus,
}

/// Infix operators (ternary and elvis have their own nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Matches,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinOp {
    /// The operator as users write it (symbolic form).
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Matches => "matches",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "^",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    /// A literal number, string, boolean or null.
    Lit(Value),
    /// `{a, b, c}`.
    List(Vec<Expr>),
    /// `{k: v, 'k2': v2}`.
    Map(Vec<(String, Expr)>),
    /// `#root`.
    Root,
    /// `#this`.
    This,
    /// A bare name: a key of the active context object (the root, or the element inside a
    /// selection/projection).
    Name(String),
    /// `target.name` / `target?.name`.
    Prop {
        target: Box<Expr>,
        name: String,
        safe: bool,
    },
    /// `target[index]` / `target?.[index]`.
    Index {
        target: Box<Expr>,
        index: Box<Expr>,
        safe: bool,
    },
    /// `target.name(args)`; a missing target means the active context object.
    Method {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
        safe: bool,
    },
    /// `#helper(args)`.
    Call {
        helper: Helper,
        args: Vec<Expr>,
    },
    /// `.?[c]`, `.^[c]`, `.$[c]`.
    Select {
        target: Box<Expr>,
        kind: SelectKind,
        cond: Box<Expr>,
        safe: bool,
    },
    /// `.![e]`.
    Project {
        target: Box<Expr>,
        expr: Box<Expr>,
        safe: bool,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `cond ? then : otherwise`.
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `value ?: default`.
    Elvis {
        value: Box<Expr>,
        default: Box<Expr>,
    },
}

impl ExprKind {
    /// Height of the tallest child (0 for leaves).
    pub(crate) fn child_depth(&self) -> usize {
        fn max<'a>(it: impl Iterator<Item = &'a Expr>) -> usize {
            it.map(|e| e.depth).max().unwrap_or(0)
        }
        match self {
            ExprKind::Lit(_) | ExprKind::Root | ExprKind::This | ExprKind::Name(_) => 0,
            ExprKind::List(items) => max(items.iter()),
            ExprKind::Map(entries) => max(entries.iter().map(|(_, e)| e)),
            ExprKind::Prop { target, .. } => target.depth,
            ExprKind::Index { target, index, .. } => target.depth.max(index.depth),
            ExprKind::Method { target, args, .. } => {
                max(target.iter().map(|t| &**t).chain(args.iter()))
            }
            ExprKind::Call { args, .. } => max(args.iter()),
            ExprKind::Select { target, cond, .. } => target.depth.max(cond.depth),
            ExprKind::Project { target, expr, .. } => target.depth.max(expr.depth),
            ExprKind::Unary { operand, .. } => operand.depth,
            ExprKind::Binary { lhs, rhs, .. } => lhs.depth.max(rhs.depth),
            ExprKind::Ternary {
                cond,
                then,
                otherwise,
            } => cond.depth.max(then.depth).max(otherwise.depth),
            ExprKind::Elvis { value, default } => value.depth.max(default.depth),
        }
    }
}
