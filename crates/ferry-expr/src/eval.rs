//! Tree-walking evaluator over `serde_json::Value`, with the sandbox's step, output and copy
//! accounting.
//!
//! Values flow as `Cow<'v, Value>`: reading `execution.stages[0].name` borrows from the root
//! instead of copying the execution. Data is copied only when it is put into a new list or map
//! (inline lists/maps, selection and projection results, `keySet()`, ...) and every such copy
//! is paid for in steps, so memory use is bounded by the step limit.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

use crate::ast::{BinOp, Expr, ExprKind, SelectKind, Span, UnaryOp};
use crate::error::{EvalError, Location, shorten};
use crate::helpers::Helper;
use crate::host::Host;
use crate::lexer::char_pos;
use crate::value::{self, Num};

/// The parser never nests deeper than this, whatever [`Limits::max_depth`] says, so that a
/// misconfigured limit cannot reintroduce stack overflows.
pub const HARD_MAX_DEPTH: usize = 128;

/// Copying or building data costs one step per this many bytes of string data.
pub(crate) const BYTES_PER_STEP: usize = 64;

/// Sandbox limits for parsing and evaluating expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Evaluation steps per template evaluation ([`crate::evaluate_tree`] allows
    /// [`crate::TREE_STEP_FACTOR`] times this for a whole tree). Every syntax-tree node
    /// evaluated costs one step, every element visited by a selection, projection or list search
    /// costs one, copying, building or scanning data costs one per JSON node plus one per 64
    /// bytes of text, and compiling a new regular expression costs 1,000.
    pub max_steps: u64,
    /// Largest string an expression may build (concatenation, `replace`, `#toJson`, ...) and
    /// largest text a template may produce, in bytes. Checked before allocating.
    pub max_output_bytes: usize,
    /// Deepest nesting the parser accepts (parentheses, operators, property chains); capped at
    /// [`HARD_MAX_DEPTH`].
    pub max_depth: usize,
    /// Longest text of one `${...}` expression, in bytes.
    pub max_source_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 100_000,
            max_output_bytes: 1 << 20,
            max_depth: 64,
            max_source_len: 16 * 1024,
        }
    }
}

impl Limits {
    /// The depth limit actually applied: at least 1, at most [`HARD_MAX_DEPTH`].
    pub(crate) fn effective_max_depth(&self) -> usize {
        self.max_depth.clamp(1, HARD_MAX_DEPTH)
    }
}

/// What an expression can see.
pub struct EvalContext<'a> {
    /// An object: `execution`, `trigger`, `parameters`, `scmInfo`, `deployedServerGroups`, and
    /// the current stage's context keys as top-level names.
    pub root: &'a Value,
    /// Engine-backed helpers (`#stage`, `#judgment`, `#fromUrl`, ...).
    pub host: &'a dyn Host,
    /// Sandbox limits.
    pub limits: Limits,
}

impl<'a> EvalContext<'a> {
    /// A context with default [`Limits`].
    pub fn new(root: &'a Value, host: &'a dyn Host) -> Self {
        Self {
            root,
            host,
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The names an expression resolves against.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'v> {
    /// `#root`.
    pub root: &'v Value,
    /// `#this`, and the object bare names are looked up in.
    pub this: &'v Value,
    /// True inside a selection or projection: bare names are element keys, and a missing key is
    /// null instead of an "unknown name" error.
    pub in_element: bool,
}

/// Most regexes kept compiled per evaluation.
const REGEX_CACHE: usize = 16;

/// Steps charged for compiling a regex that is not in the cache.
pub(crate) const REGEX_COMPILE_STEPS: u64 = 1000;

/// Most URL fetches (`#fromUrl`, `#jsonFromUrl`) per template evaluation.
pub(crate) const MAX_FETCHES: u32 = 8;

/// State of one template evaluation.
pub(crate) struct Evaluator<'c> {
    pub host: &'c dyn Host,
    pub limits: Limits,
    /// The template string, for error locations.
    pub src: &'c str,
    steps: u64,
    pub fetches: u32,
    regexes: Vec<(String, bool, Regex)>,
}

impl<'c> Evaluator<'c> {
    pub(crate) fn new(ctx: &EvalContext<'c>, src: &'c str) -> Self {
        Self {
            host: ctx.host,
            limits: ctx.limits,
            src,
            steps: 0,
            fetches: 0,
            regexes: Vec::new(),
        }
    }

    /// Steps used so far.
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// Location of a node for error messages.
    pub(crate) fn loc(&self, span: Span) -> Location {
        let snippet = self.src.get(span.start..span.end).unwrap_or_default();
        Location {
            position: char_pos(self.src, span.start),
            snippet: shorten(snippet.trim(), 80),
        }
    }

    /// Charges `n` steps.
    pub(crate) fn charge(&mut self, n: u64, span: Span) -> Result<(), EvalError> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.limits.max_steps {
            return Err(EvalError::StepLimit {
                limit: self.limits.max_steps,
                at: self.loc(span),
            });
        }
        Ok(())
    }

    /// Charges for building or copying `len` bytes of text.
    pub(crate) fn charge_bytes(&mut self, len: usize, span: Span) -> Result<(), EvalError> {
        self.charge((len / BYTES_PER_STEP) as u64, span)
    }

    /// Charges for copying a value: one step per JSON node and per 64 bytes of text.
    pub(crate) fn charge_copy(&mut self, v: &Value, span: Span) -> Result<(), EvalError> {
        let budget = self.limits.max_steps.saturating_sub(self.steps);
        let cost = value::copy_cost(v, budget);
        self.charge(cost, span)
    }

    /// Fails if a string of `len` bytes would exceed the output limit.
    pub(crate) fn check_len(&self, len: usize, span: Span) -> Result<(), EvalError> {
        if len > self.limits.max_output_bytes {
            return Err(EvalError::OutputLimit {
                limit: self.limits.max_output_bytes,
                at: self.loc(span),
            });
        }
        Ok(())
    }

    /// Makes an owned value, paying for the copy if it was borrowed.
    pub(crate) fn own(&mut self, v: Cow<'_, Value>, span: Span) -> Result<Value, EvalError> {
        match v {
            Cow::Owned(v) => Ok(v),
            Cow::Borrowed(v) => {
                self.charge_copy(v, span)?;
                Ok(v.clone())
            }
        }
    }

    pub(crate) fn type_error(&self, message: String, span: Span) -> EvalError {
        EvalError::Type {
            message,
            at: self.loc(span),
        }
    }

    /// Compiles (or reuses) a regex under the sandbox's size limits. `full` anchors it so that it
    /// must match the whole string, like Java's `String.matches`.
    pub(crate) fn regex(
        &mut self,
        pattern: &str,
        full: bool,
        span: Span,
    ) -> Result<Regex, EvalError> {
        if let Some((_, _, re)) = self
            .regexes
            .iter()
            .find(|(p, f, _)| p == pattern && *f == full)
        {
            return Ok(re.clone());
        }
        // Compiling is far costlier than matching; repeated patterns hit the cache.
        self.charge(REGEX_COMPILE_STEPS, span)?;
        self.charge_bytes(pattern.len().saturating_mul(16), span)?;
        let re = crate::regex_util::compile(pattern, full).map_err(|message| EvalError::Regex {
            pattern: shorten(pattern, 80),
            message,
            at: self.loc(span),
        })?;
        if self.regexes.len() >= REGEX_CACHE {
            self.regexes.remove(0);
        }
        self.regexes.push((pattern.to_string(), full, re.clone()));
        Ok(re)
    }

    /// Reads a condition: booleans, or the strings `true` / `false` (any case).
    pub(crate) fn condition(&self, v: &Value, span: Span) -> Result<bool, EvalError> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            other => Err(EvalError::NotBoolean {
                found: value::describe(other),
                at: self.loc(span),
            }),
        }
    }

    /// Evaluates one node.
    ///
    /// This is a thin dispatcher and each kind of node has its own small function: the stack
    /// used per nesting level is the sum of the frames on the recursive path, and small frames
    /// keep deep (but allowed) nesting cheap even in unoptimised builds.
    pub(crate) fn eval<'v>(
        &mut self,
        e: &'v Expr,
        sc: Scope<'v>,
    ) -> Result<Cow<'v, Value>, EvalError> {
        self.charge(1, e.span)?;
        match &e.kind {
            ExprKind::Lit(v) => Ok(Cow::Borrowed(v)),
            ExprKind::Root => Ok(Cow::Borrowed(sc.root)),
            ExprKind::This => Ok(Cow::Borrowed(sc.this)),
            ExprKind::Name(name) => self.name(name, sc, e.span),
            ExprKind::List(items) => self.eval_list(items, sc),
            ExprKind::Map(entries) => self.eval_map(entries, sc),
            ExprKind::Prop { target, name, safe } => {
                self.eval_prop(target, name, *safe, sc, e.span)
            }
            ExprKind::Index {
                target,
                index,
                safe,
            } => self.eval_index(target, index, *safe, sc, e.span),
            ExprKind::Method {
                target,
                name,
                args,
                safe,
            } => self.eval_method(target.as_deref(), name, args, *safe, sc, e.span),
            ExprKind::Call { helper, args } => self.eval_call(*helper, args, sc, e.span),
            ExprKind::Select {
                target,
                kind,
                cond,
                safe,
            } => self.eval_select(target, *kind, cond, *safe, sc, e.span),
            ExprKind::Project { target, expr, safe } => {
                self.eval_project(target, expr, *safe, sc, e.span)
            }
            ExprKind::Unary { op, operand } => self.eval_unary(*op, operand, sc, e.span),
            ExprKind::Binary { op, lhs, rhs } => self.eval_binary(*op, lhs, rhs, sc, e.span),
            ExprKind::Ternary {
                cond,
                then,
                otherwise,
            } => self.eval_ternary(cond, then, otherwise, sc),
            ExprKind::Elvis { value, default } => self.eval_elvis(value, default, sc),
        }
    }

    #[inline(never)]
    fn eval_list<'v>(
        &mut self,
        items: &'v [Expr],
        sc: Scope<'v>,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let v = self.eval(item, sc)?;
            out.push(self.own(v, item.span)?);
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    #[inline(never)]
    fn eval_map<'v>(
        &mut self,
        entries: &'v [(String, Expr)],
        sc: Scope<'v>,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let mut out = Map::new();
        for (k, item) in entries {
            let v = self.eval(item, sc)?;
            let v = self.own(v, item.span)?;
            out.insert(k.clone(), v);
        }
        Ok(Cow::Owned(Value::Object(out)))
    }

    #[inline(never)]
    fn eval_prop<'v>(
        &mut self,
        target: &'v Expr,
        name: &str,
        safe: bool,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let t = self.eval(target, sc)?;
        self.property(t, name, safe, span)
    }

    #[inline(never)]
    fn eval_index<'v>(
        &mut self,
        target: &'v Expr,
        index: &'v Expr,
        safe: bool,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let t = self.eval(target, sc)?;
        if t.is_null() && safe {
            return Ok(Cow::Owned(Value::Null));
        }
        let i = self.eval(index, sc)?;
        self.index(t, &i, span)
    }

    #[inline(never)]
    fn eval_method<'v>(
        &mut self,
        target: Option<&'v Expr>,
        name: &str,
        args: &'v [Expr],
        safe: bool,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let t = match target {
            Some(t) => self.eval(t, sc)?,
            None => Cow::Borrowed(sc.this),
        };
        if t.is_null() {
            if safe {
                return Ok(Cow::Owned(Value::Null));
            }
            return Err(EvalError::Null {
                action: format!("call method '{name}' on"),
                at: self.loc(span),
            });
        }
        let values = self.eval_args(args, sc)?;
        self.call_method(t, name, &values, span)
    }

    fn eval_args<'v>(
        &mut self,
        args: &'v [Expr],
        sc: Scope<'v>,
    ) -> Result<Vec<Cow<'v, Value>>, EvalError> {
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.eval(a, sc)?);
        }
        Ok(values)
    }

    #[inline(never)]
    fn eval_call<'v>(
        &mut self,
        helper: Helper,
        args: &'v [Expr],
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let values = self.eval_args(args, sc)?;
        Ok(Cow::Owned(self.call_helper(helper, &values, span)?))
    }

    #[inline(never)]
    fn eval_select<'v>(
        &mut self,
        target: &'v Expr,
        kind: SelectKind,
        cond: &'v Expr,
        safe: bool,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let t = self.eval(target, sc)?;
        self.select(t, kind, cond, safe, sc.root, span)
    }

    #[inline(never)]
    fn eval_project<'v>(
        &mut self,
        target: &'v Expr,
        expr: &'v Expr,
        safe: bool,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let t = self.eval(target, sc)?;
        self.project(t, expr, safe, sc.root, span)
    }

    #[inline(never)]
    fn eval_unary<'v>(
        &mut self,
        op: UnaryOp,
        operand: &'v Expr,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let v = self.eval(operand, sc)?;
        self.unary(op, &v, span).map(Cow::Owned)
    }

    #[inline(never)]
    fn eval_binary<'v>(
        &mut self,
        op: BinOp,
        lhs: &'v Expr,
        rhs: &'v Expr,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let l = self.eval(lhs, sc)?;
        // `and` / `or` short-circuit.
        if op == BinOp::And || op == BinOp::Or {
            let left = self.condition(&l, lhs.span)?;
            if left == (op == BinOp::Or) {
                return Ok(Cow::Owned(Value::Bool(left)));
            }
            let r = self.eval(rhs, sc)?;
            return Ok(Cow::Owned(Value::Bool(self.condition(&r, rhs.span)?)));
        }
        let r = self.eval(rhs, sc)?;
        self.binary(op, &l, &r, span).map(Cow::Owned)
    }

    #[inline(never)]
    fn eval_ternary<'v>(
        &mut self,
        cond: &'v Expr,
        then: &'v Expr,
        otherwise: &'v Expr,
        sc: Scope<'v>,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let c = self.eval(cond, sc)?;
        if self.condition(&c, cond.span)? {
            self.eval(then, sc)
        } else {
            self.eval(otherwise, sc)
        }
    }

    #[inline(never)]
    fn eval_elvis<'v>(
        &mut self,
        value: &'v Expr,
        default: &'v Expr,
        sc: Scope<'v>,
    ) -> Result<Cow<'v, Value>, EvalError> {
        let v = self.eval(value, sc)?;
        match &*v {
            Value::Null => self.eval(default, sc),
            Value::String(s) if s.is_empty() => self.eval(default, sc),
            _ => Ok(v),
        }
    }

    /// A bare name: a key of the active context object.
    fn name<'v>(
        &mut self,
        name: &str,
        sc: Scope<'v>,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        match sc.this {
            Value::Object(m) => match m.get(name) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None if sc.in_element => Ok(Cow::Owned(Value::Null)),
                None => {
                    let mut keys: Vec<&str> = m.keys().map(String::as_str).take(20).collect();
                    if m.len() > keys.len() {
                        keys.push("…");
                    }
                    let available = if keys.is_empty() {
                        "(none)".to_string()
                    } else {
                        keys.join(", ")
                    };
                    Err(EvalError::UnknownName {
                        name: name.to_string(),
                        available,
                        at: self.loc(span),
                    })
                }
            },
            Value::Null if sc.in_element => Err(EvalError::Null {
                action: format!("read property '{name}' of"),
                at: self.loc(span),
            }),
            Value::Null => Err(EvalError::UnknownName {
                name: name.to_string(),
                available: "(none)".into(),
                at: self.loc(span),
            }),
            other => Err(self.type_error(
                format!(
                    "cannot read property '{name}' of {}",
                    value::type_name(other)
                ),
                span,
            )),
        }
    }

    /// `target.name`: a map key (missing keys are null).
    fn property<'v>(
        &mut self,
        target: Cow<'v, Value>,
        name: &str,
        safe: bool,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        match target {
            Cow::Borrowed(Value::Object(m)) => {
                Ok(m.get(name).map_or(Cow::Owned(Value::Null), Cow::Borrowed))
            }
            Cow::Owned(Value::Object(mut m)) => {
                Ok(Cow::Owned(m.remove(name).unwrap_or(Value::Null)))
            }
            t if t.is_null() => {
                if safe {
                    Ok(Cow::Owned(Value::Null))
                } else {
                    Err(EvalError::Null {
                        action: format!("read property '{name}' of"),
                        at: self.loc(span),
                    })
                }
            }
            other => {
                let hint = match &*other {
                    Value::String(_) if name == "length" => " (use length())",
                    Value::Array(_) if name == "size" || name == "length" => " (use size())",
                    _ => "",
                };
                Err(self.type_error(
                    format!(
                        "cannot read property '{name}' of {}{hint}",
                        value::type_name(&other)
                    ),
                    span,
                ))
            }
        }
    }

    /// `target[index]`: map key, list position or string character.
    pub(crate) fn index<'v>(
        &mut self,
        target: Cow<'v, Value>,
        index: &Value,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        if target.is_null() {
            return Err(EvalError::Null {
                action: "index into".into(),
                at: self.loc(span),
            });
        }
        match &*target {
            Value::Object(_) => {
                let key: Cow<'_, str> = match index {
                    Value::String(s) => {
                        self.charge_bytes(s.len(), span)?;
                        Cow::Borrowed(s.as_str())
                    }
                    Value::Number(n) => Cow::Owned(n.to_string()),
                    Value::Bool(b) => Cow::Owned(b.to_string()),
                    other => {
                        return Err(self.type_error(
                            format!(
                                "a map key must be a string, not {}",
                                value::type_name(other)
                            ),
                            span,
                        ));
                    }
                };
                Ok(match target {
                    Cow::Borrowed(Value::Object(m)) => {
                        m.get(&*key).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                    }
                    Cow::Owned(Value::Object(mut m)) => {
                        Cow::Owned(m.remove(&*key).unwrap_or(Value::Null))
                    }
                    _ => Cow::Owned(Value::Null),
                })
            }
            Value::Array(items) => {
                let i = self.list_index(index, items.len(), "a list", span)?;
                Ok(match target {
                    Cow::Borrowed(Value::Array(items)) => {
                        items.get(i).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                    }
                    Cow::Owned(Value::Array(mut items)) => Cow::Owned(if i < items.len() {
                        items.swap_remove(i)
                    } else {
                        Value::Null
                    }),
                    _ => Cow::Owned(Value::Null),
                })
            }
            Value::String(s) => {
                self.charge_bytes(s.len(), span)?;
                let len = s.chars().count();
                let i = self.list_index(index, len, "a string", span)?;
                Ok(Cow::Owned(Value::String(
                    s.chars().nth(i).map(String::from).unwrap_or_default(),
                )))
            }
            other => Err(self.type_error(
                format!("cannot index into {}", value::type_name(other)),
                span,
            )),
        }
    }

    /// Checks a list/string index: an integer in `0..len`.
    pub(crate) fn list_index(
        &self,
        index: &Value,
        len: usize,
        what: &'static str,
        span: Span,
    ) -> Result<usize, EvalError> {
        let Some(Num::Int(i)) = value::as_num(index) else {
            return Err(self.type_error(
                format!(
                    "an index into {what} must be an integer, not {}",
                    value::describe(index)
                ),
                span,
            ));
        };
        match usize::try_from(i) {
            Ok(u) if u < len => Ok(u),
            _ => Err(EvalError::IndexOutOfBounds {
                index: i,
                len,
                what,
                at: self.loc(span),
            }),
        }
    }

    /// Elements of a list, or `{key, value}` entries of a map, for selection and projection.
    fn elements<'x>(
        &mut self,
        target: &'x Value,
        what: &str,
        span: Span,
    ) -> Result<Elements<'x>, EvalError> {
        match target {
            Value::Array(items) => Ok(Elements::List(items)),
            Value::Object(m) => {
                let mut entries = Vec::with_capacity(m.len());
                for (k, v) in m {
                    self.charge(1, span)?;
                    self.charge_copy(v, span)?;
                    let mut e = Map::new();
                    e.insert("key".into(), Value::String(k.clone()));
                    e.insert("value".into(), v.clone());
                    entries.push((k.as_str(), Value::Object(e)));
                }
                Ok(Elements::Map(entries))
            }
            other => Err(self.type_error(
                format!(
                    "cannot {what} {} (only lists and maps)",
                    value::type_name(other)
                ),
                span,
            )),
        }
    }

    fn select<'v>(
        &mut self,
        target: Cow<'v, Value>,
        kind: SelectKind,
        cond: &'v Expr,
        safe: bool,
        root: &'v Value,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        if target.is_null() {
            if safe {
                return Ok(Cow::Owned(Value::Null));
            }
            return Err(EvalError::Null {
                action: "select from".into(),
                at: self.loc(span),
            });
        }
        let elements = self.elements(&target, "select from", span)?;
        let picked = {
            let items: Vec<&Value> = match &elements {
                Elements::List(items) => items.iter().collect(),
                Elements::Map(entries) => entries.iter().map(|(_, e)| e).collect(),
            };
            let mut picked = Vec::new();
            let order: Box<dyn Iterator<Item = usize>> = match kind {
                SelectKind::Last => Box::new((0..items.len()).rev()),
                _ => Box::new(0..items.len()),
            };
            for i in order {
                self.charge(1, span)?;
                let Some(el) = items.get(i) else { continue };
                let inner = Scope {
                    root,
                    this: el,
                    in_element: true,
                };
                let c = self.eval(cond, inner)?;
                if self.condition(&c, cond.span)? {
                    picked.push(i);
                    if kind != SelectKind::All {
                        break;
                    }
                }
            }
            picked
        };
        let single = kind != SelectKind::All;
        let picked_keys: Option<Vec<String>> = match &elements {
            Elements::Map(entries) => Some(
                picked
                    .iter()
                    .filter_map(|i| entries.get(*i))
                    .map(|(k, _)| (*k).to_string())
                    .collect(),
            ),
            Elements::List(_) => None,
        };
        drop(elements);
        if let Some(keys) = picked_keys {
            // Selecting from a map gives a map of the selected entries (one entry for ^[ and $[).
            let Value::Object(m) = &*target else {
                return Ok(Cow::Owned(Value::Null));
            };
            if single && keys.is_empty() {
                return Ok(Cow::Owned(Value::Null));
            }
            let mut out = Map::new();
            for k in keys {
                if let Some(v) = m.get(&k) {
                    let v = self.own(Cow::Borrowed(v), span)?;
                    out.insert(k, v);
                }
            }
            return Ok(Cow::Owned(Value::Object(out)));
        }
        match target {
            Cow::Borrowed(Value::Array(items)) => {
                if single {
                    return Ok(picked
                        .first()
                        .and_then(|i| items.get(*i))
                        .map_or(Cow::Owned(Value::Null), Cow::Borrowed));
                }
                let mut out = Vec::with_capacity(picked.len());
                for i in picked {
                    if let Some(v) = items.get(i) {
                        out.push(self.own(Cow::Borrowed(v), span)?);
                    }
                }
                Ok(Cow::Owned(Value::Array(out)))
            }
            Cow::Owned(Value::Array(items)) => {
                if single {
                    let i = picked.first().copied();
                    return Ok(Cow::Owned(
                        i.and_then(|i| items.into_iter().nth(i))
                            .unwrap_or(Value::Null),
                    ));
                }
                let mut keep = vec![false; items.len()];
                for i in picked {
                    if let Some(k) = keep.get_mut(i) {
                        *k = true;
                    }
                }
                let out = items
                    .into_iter()
                    .zip(keep)
                    .filter_map(|(v, k)| k.then_some(v))
                    .collect();
                Ok(Cow::Owned(Value::Array(out)))
            }
            _ => Ok(Cow::Owned(Value::Null)),
        }
    }

    fn project<'v>(
        &mut self,
        target: Cow<'v, Value>,
        expr: &'v Expr,
        safe: bool,
        root: &'v Value,
        span: Span,
    ) -> Result<Cow<'v, Value>, EvalError> {
        if target.is_null() {
            if safe {
                return Ok(Cow::Owned(Value::Null));
            }
            return Err(EvalError::Null {
                action: "project".into(),
                at: self.loc(span),
            });
        }
        let elements = self.elements(&target, "project", span)?;
        let items: Vec<&Value> = match &elements {
            Elements::List(items) => items.iter().collect(),
            Elements::Map(entries) => entries.iter().map(|(_, e)| e).collect(),
        };
        let mut out = Vec::with_capacity(items.len());
        for el in items {
            self.charge(1, span)?;
            let inner = Scope {
                root,
                this: el,
                in_element: true,
            };
            let v = self.eval(expr, inner)?;
            out.push(self.own(v, expr.span)?);
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    fn unary(&mut self, op: UnaryOp, v: &Value, span: Span) -> Result<Value, EvalError> {
        match op {
            UnaryOp::Not => Ok(Value::Bool(!self.condition(v, span)?)),
            UnaryOp::Neg | UnaryOp::Plus => {
                let sym = if op == UnaryOp::Neg { "-" } else { "+" };
                let Some(n) = value::as_num(v) else {
                    return Err(self.type_error(
                        format!("unary '{sym}' needs a number, not {}", value::describe(v)),
                        span,
                    ));
                };
                let n = match (op, n) {
                    (UnaryOp::Plus, n) => n,
                    (_, Num::Int(i)) => {
                        Num::Int(i.checked_neg().ok_or_else(|| EvalError::Overflow {
                            op: "-",
                            at: self.loc(span),
                        })?)
                    }
                    (_, Num::Float(f)) => Num::Float(-f),
                };
                self.num_value(n, span)
            }
        }
    }

    pub(crate) fn num_value(&self, n: Num, span: Span) -> Result<Value, EvalError> {
        value::num_to_value(n).ok_or_else(|| EvalError::NotFinite { at: self.loc(span) })
    }

    fn binary(&mut self, op: BinOp, l: &Value, r: &Value, span: Span) -> Result<Value, EvalError> {
        match op {
            BinOp::Eq | BinOp::Ne => {
                let budget = self.limits.max_steps.saturating_sub(self.steps);
                let (eq, cost) = value::deep_eq(l, r, budget);
                self.charge(cost, span)?;
                Ok(Value::Bool(eq == (op == BinOp::Eq)))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if let (Value::String(a), Value::String(b)) = (l, r) {
                    self.charge_bytes(a.len().min(b.len()), span)?;
                }
                let Some(ord) = value::compare(l, r) else {
                    return Err(self.type_error(
                        format!(
                            "cannot compare {} with {} using '{}'",
                            value::describe(l),
                            value::describe(r),
                            op.symbol()
                        ),
                        span,
                    ));
                };
                Ok(Value::Bool(match op {
                    BinOp::Lt => ord == Ordering::Less,
                    BinOp::Le => ord != Ordering::Greater,
                    BinOp::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }))
            }
            BinOp::Matches => {
                let (Value::String(s), Value::String(p)) = (l, r) else {
                    return Err(self.type_error(
                        format!(
                            "'matches' needs a string and a pattern string, not {} and {}",
                            value::type_name(l),
                            value::type_name(r)
                        ),
                        span,
                    ));
                };
                let re = self.regex(p, true, span)?;
                self.charge_bytes(s.len(), span)?;
                Ok(Value::Bool(re.is_match(s)))
            }
            BinOp::Add if l.is_string() || r.is_string() => {
                let a = self.text(l, "null", span)?;
                let b = self.text(r, "null", span)?;
                let len = a.len().saturating_add(b.len());
                self.check_len(len, span)?;
                self.charge_bytes(len, span)?;
                let mut s = String::with_capacity(len);
                s.push_str(&a);
                s.push_str(&b);
                Ok(Value::String(s))
            }
            BinOp::Mul if l.is_string() => {
                let Value::String(s) = l else {
                    return Ok(Value::Null);
                };
                let Some(Num::Int(n)) = value::as_num(r) else {
                    return Err(self.type_error(
                        format!(
                            "a string can only be multiplied by an integer, not {}",
                            value::describe(r)
                        ),
                        span,
                    ));
                };
                let n = usize::try_from(n).map_err(|_| {
                    self.type_error(format!("cannot repeat a string {n} times"), span)
                })?;
                let len = s.len().saturating_mul(n);
                self.check_len(len, span)?;
                self.charge_bytes(len, span)?;
                Ok(Value::String(s.repeat(n)))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow => {
                let (Some(a), Some(b)) = (value::as_num(l), value::as_num(r)) else {
                    return Err(self.type_error(
                        format!(
                            "cannot apply '{}' to {} and {}",
                            op.symbol(),
                            value::describe(l),
                            value::describe(r)
                        ),
                        span,
                    ));
                };
                let n = self.arith(op, a, b, span)?;
                self.num_value(n, span)
            }
            BinOp::And | BinOp::Or => {
                let a = self.condition(l, span)?;
                let b = self.condition(r, span)?;
                Ok(Value::Bool(if op == BinOp::And { a && b } else { a || b }))
            }
        }
    }

    /// Java-like arithmetic: integers stay integers (checked, truncating division), anything
    /// with a float is a float.
    fn arith(&self, op: BinOp, a: Num, b: Num, span: Span) -> Result<Num, EvalError> {
        let overflow = || EvalError::Overflow {
            op: op.symbol(),
            at: self.loc(span),
        };
        let div_zero = || EvalError::DivisionByZero { at: self.loc(span) };
        match (a, b) {
            (Num::Int(x), Num::Int(y)) => {
                let r = match op {
                    BinOp::Add => x.checked_add(y),
                    BinOp::Sub => x.checked_sub(y),
                    BinOp::Mul => x.checked_mul(y),
                    BinOp::Div => {
                        if y == 0 {
                            return Err(div_zero());
                        }
                        x.checked_div(y)
                    }
                    BinOp::Rem => {
                        if y == 0 {
                            return Err(div_zero());
                        }
                        x.checked_rem(y)
                    }
                    _ => {
                        let Ok(e) = u32::try_from(y) else {
                            if y < 0 {
                                return Err(self.type_error(
                                    format!("negative integer exponent {y} (use a float base)"),
                                    span,
                                ));
                            }
                            return Err(overflow());
                        };
                        x.checked_pow(e)
                    }
                };
                r.map(Num::Int).ok_or_else(overflow)
            }
            (a, b) => {
                let (x, y) = (a.as_f64(), b.as_f64());
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => {
                        if y == 0.0 {
                            return Err(div_zero());
                        }
                        x / y
                    }
                    BinOp::Rem => {
                        if y == 0.0 {
                            return Err(div_zero());
                        }
                        x % y
                    }
                    _ => x.powf(y),
                };
                Ok(Num::Float(r))
            }
        }
    }

    /// Text of a value for concatenation and templates: strings as they are, `null` as
    /// `null_text`, numbers and booleans as written, lists and maps as compact JSON.
    pub(crate) fn text<'x>(
        &mut self,
        v: &'x Value,
        null_text: &'static str,
        span: Span,
    ) -> Result<Cow<'x, str>, EvalError> {
        Ok(match v {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Null => Cow::Borrowed(null_text),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Number(n) => Cow::Owned(n.to_string()),
            Value::Array(_) | Value::Object(_) => Cow::Owned(self.json(v, span)?),
        })
    }

    /// Compact JSON text of a value, refusing output larger than the limit.
    pub(crate) fn json(&mut self, v: &Value, span: Span) -> Result<String, EvalError> {
        let s = value::to_json_limited(v, self.limits.max_output_bytes).ok_or_else(|| {
            EvalError::OutputLimit {
                limit: self.limits.max_output_bytes,
                at: self.loc(span),
            }
        })?;
        self.charge_bytes(s.len(), span)?;
        Ok(s)
    }
}

/// What selection and projection iterate over.
enum Elements<'x> {
    List(&'x [Value]),
    /// Map entries as `(key, {key, value})`.
    Map(Vec<(&'x str, Value)>),
}
