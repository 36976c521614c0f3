//! A small CEL evaluator for CRD `x-kubernetes-validations` rules.
//!
//! The Flux CRDs only use `has(self.a.b)`, `!`, `&&`, `||`, `==`/`!=`
//! against string literals, parentheses and field selection. This module
//! covers that plus a little headroom (`?:`, `in`, `size()`, ordering,
//! `+`/`-`, list literals, `startsWith`/`endsWith`/`contains`), with CEL's
//! semantics where they matter for validation: `&&`/`||` absorb an error
//! from one side when the other side decides the result, and selecting an
//! absent field is an evaluation error (`no such key: x`), which is why
//! rules guard with `has()`.
//!
//! Anything else (macros like `all`/`exists`, `matches`, timestamps,
//! quantities, `oldSelf` transition rules) fails to compile with
//! [`CelError::Unsupported`]; the caller logs it and skips the rule.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CelError {
    /// The rule uses syntax or functions outside the supported subset.
    #[error("unsupported CEL expression: {0}")]
    Unsupported(String),
    /// A runtime error, worded as cel-go words it.
    #[error("{0}")]
    Eval(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    Ident(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Has(Box<Expr>, String),
    Call(String, Option<Box<Expr>>, Vec<Expr>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Double(f64),
    Op(&'static str),
}

const OPS: [&str; 21] = [
    "||", "&&", "==", "!=", "<=", ">=", "!", "<", ">", "(", ")", "[", "]", "{", "}", ".", ",", "?",
    ":", "+", "-",
];

fn lex(src: &str) -> Result<Vec<Tok>, CelError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if text.contains('.') {
                let d = text
                    .parse()
                    .map_err(|_| CelError::Unsupported(format!("number {text}")))?;
                out.push(Tok::Double(d));
            } else {
                let n = text
                    .parse()
                    .map_err(|_| CelError::Unsupported(format!("number {text}")))?;
                out.push(Tok::Int(n));
            }
        } else if c == '\'' || c == '"' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(CelError::Unsupported("unterminated string".into()));
                };
                i += 1;
                if ch == quote {
                    break;
                }
                if ch == '\\' {
                    let Some(&e) = chars.get(i) else {
                        return Err(CelError::Unsupported("unterminated escape".into()));
                    };
                    i += 1;
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' | '\'' | '"' => e,
                        other => return Err(CelError::Unsupported(format!("escape \\{other}"))),
                    });
                } else {
                    s.push(ch);
                }
            }
            out.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(CelError::Unsupported(format!("character {c:?}")));
            };
            i += op.chars().count();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), CelError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(CelError::Unsupported(format!(
                "expected {op:?} at token {}",
                self.pos
            )))
        }
    }

    fn expr(&mut self) -> Result<Expr, CelError> {
        let c = self.or()?;
        if self.eat_op("?") {
            let a = self.or()?;
            self.expect_op(":")?;
            let b = self.expr()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }

    fn or(&mut self) -> Result<Expr, CelError> {
        let mut l = self.and()?;
        while self.eat_op("||") {
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, CelError> {
        let mut l = self.relation()?;
        while self.eat_op("&&") {
            l = Expr::And(Box::new(l), Box::new(self.relation()?));
        }
        Ok(l)
    }

    fn relation(&mut self) -> Result<Expr, CelError> {
        let mut l = self.addition()?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op("==")) => BinOp::Eq,
                Some(Tok::Op("!=")) => BinOp::Ne,
                Some(Tok::Op("<")) => BinOp::Lt,
                Some(Tok::Op("<=")) => BinOp::Le,
                Some(Tok::Op(">")) => BinOp::Gt,
                Some(Tok::Op(">=")) => BinOp::Ge,
                Some(Tok::Ident(k)) if k == "in" => BinOp::In,
                _ => return Ok(l),
            };
            self.pos += 1;
            l = Expr::Bin(op, Box::new(l), Box::new(self.addition()?));
        }
    }

    fn addition(&mut self) -> Result<Expr, CelError> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_op("+") {
                BinOp::Add
            } else if self.eat_op("-") {
                BinOp::Sub
            } else {
                return Ok(l);
            };
            l = Expr::Bin(op, Box::new(l), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, CelError> {
        if self.eat_op("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.member()
    }

    fn args(&mut self) -> Result<Vec<Expr>, CelError> {
        let mut args = Vec::new();
        if self.eat_op(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_op(")") {
                return Ok(args);
            }
            self.expect_op(",")?;
        }
    }

    fn member(&mut self) -> Result<Expr, CelError> {
        let mut e = self.primary()?;
        loop {
            if self.eat_op(".") {
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return Err(CelError::Unsupported(
                        "expected field name after '.'".into(),
                    ));
                };
                self.pos += 1;
                e = if self.eat_op("(") {
                    let args = self.args()?;
                    Expr::Call(name, Some(Box::new(e)), args)
                } else {
                    Expr::Select(Box::new(e), name)
                };
            } else if self.eat_op("[") {
                let idx = self.expr()?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, CelError> {
        let Some(tok) = self.toks.get(self.pos).cloned() else {
            return Err(CelError::Unsupported("unexpected end of expression".into()));
        };
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Int(n) => Ok(Expr::Lit(Value::from(n))),
            Tok::Double(d) => Ok(Expr::Lit(Value::from(d))),
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "has" => {
                    self.expect_op("(")?;
                    let arg = self.expr()?;
                    self.expect_op(")")?;
                    match arg {
                        Expr::Select(operand, field) => Ok(Expr::Has(operand, field)),
                        _ => Err(CelError::Unsupported(
                            "has() requires a field selection".into(),
                        )),
                    }
                }
                _ if self.eat_op("(") => {
                    let args = self.args()?;
                    Ok(Expr::Call(name, None, args))
                }
                "self" => Ok(Expr::Ident(name)),
                // oldSelf (transition rules) and any other variable are
                // outside the subset.
                other => Err(CelError::Unsupported(format!("identifier {other}"))),
            },
            Tok::Op(op) => Err(CelError::Unsupported(format!("unexpected {op:?}"))),
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    expr: Expr,
}

/// Parses `rule`; anything outside the supported subset is `Unsupported`.
pub fn compile(rule: &str) -> Result<Program, CelError> {
    let mut p = Parser {
        toks: lex(rule)?,
        pos: 0,
    };
    let expr = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(CelError::Unsupported(format!(
            "trailing tokens after position {}",
            p.pos
        )));
    }
    check_functions(&expr)?;
    Ok(Program { expr })
}

const FUNCTIONS: [&str; 4] = ["size", "startsWith", "endsWith", "contains"];

fn check_functions(e: &Expr) -> Result<(), CelError> {
    match e {
        Expr::Call(name, target, args) => {
            if !FUNCTIONS.contains(&name.as_str()) {
                return Err(CelError::Unsupported(format!("function {name}")));
            }
            if let Some(t) = target {
                check_functions(t)?;
            }
            args.iter().try_for_each(check_functions)
        }
        Expr::Lit(_) | Expr::Ident(_) => Ok(()),
        Expr::Select(a, _) | Expr::Has(a, _) | Expr::Not(a) | Expr::Neg(a) => check_functions(a),
        Expr::List(items) => items.iter().try_for_each(check_functions),
        Expr::Index(a, b) | Expr::Bin(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
            check_functions(a)?;
            check_functions(b)
        }
        Expr::Cond(a, b, c) => {
            check_functions(a)?;
            check_functions(b)?;
            check_functions(c)
        }
    }
}

impl Program {
    /// Evaluates the rule with `self` bound to `this`; Ok(true) means valid.
    pub fn eval_bool(&self, this: &Value) -> Result<bool, CelError> {
        match eval(&self.expr, this)? {
            Value::Bool(b) => Ok(b),
            other => Err(CelError::Eval(format!(
                "rule did not evaluate to a bool: {other}"
            ))),
        }
    }
}

fn no_overload(op: &str) -> CelError {
    CelError::Eval(format!("no such overload: {op}"))
}

fn as_bool(v: Value, op: &str) -> Result<bool, CelError> {
    v.as_bool().ok_or_else(|| no_overload(op))
}

fn eval(e: &Expr, this: &Value) -> Result<Value, CelError> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ident(_) => Ok(this.clone()),
        Expr::Select(operand, field) => match eval(operand, this)? {
            Value::Object(m) => m
                .get(field)
                .cloned()
                .ok_or_else(|| CelError::Eval(format!("no such key: {field}"))),
            _ => Err(no_overload("select")),
        },
        Expr::Has(operand, field) => match eval(operand, this)? {
            Value::Object(m) => Ok(Value::Bool(m.contains_key(field))),
            _ => Err(no_overload("has")),
        },
        Expr::Index(a, i) => match (eval(a, this)?, eval(i, this)?) {
            (Value::Array(items), Value::Number(n)) => n
                .as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| items.get(n).cloned())
                .ok_or_else(|| CelError::Eval(format!("index out of range: {n}"))),
            (Value::Object(m), Value::String(k)) => m
                .get(&k)
                .cloned()
                .ok_or_else(|| CelError::Eval(format!("no such key: {k}"))),
            _ => Err(no_overload("_[_]")),
        },
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, this))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not(a) => Ok(Value::Bool(!as_bool(eval(a, this)?, "!_")?)),
        Expr::Neg(a) => match eval(a, this)? {
            Value::Number(n) if n.is_i64() => Ok(Value::from(-n.as_i64().unwrap_or(0))),
            Value::Number(n) => Ok(Value::from(-n.as_f64().unwrap_or(0.0))),
            _ => Err(no_overload("-_")),
        },
        // CEL's logical operators are commutative: an error on one side is
        // absorbed when the other side alone decides the result.
        Expr::Or(a, b) => logical(eval(a, this), || eval(b, this), true, "_||_"),
        Expr::And(a, b) => logical(eval(a, this), || eval(b, this), false, "_&&_"),
        Expr::Cond(c, a, b) => {
            if as_bool(eval(c, this)?, "_?_:_")? {
                eval(a, this)
            } else {
                eval(b, this)
            }
        }
        Expr::Bin(op, a, b) => binary(*op, eval(a, this)?, eval(b, this)?),
        Expr::Call(name, target, args) => {
            let mut vals = Vec::new();
            if let Some(t) = target {
                vals.push(eval(t, this)?);
            }
            for a in args {
                vals.push(eval(a, this)?);
            }
            call(name, &vals)
        }
    }
}

fn logical(
    l: Result<Value, CelError>,
    r: impl FnOnce() -> Result<Value, CelError>,
    decisive: bool,
    op: &str,
) -> Result<Value, CelError> {
    let l = l.and_then(|v| as_bool(v, op));
    if l == Ok(decisive) {
        return Ok(Value::Bool(decisive));
    }
    let r = r().and_then(|v| as_bool(v, op));
    match (l, r) {
        (_, Ok(v)) if v == decisive => Ok(Value::Bool(decisive)),
        (Err(e), _) | (_, Err(e)) => Err(e),
        _ => Ok(Value::Bool(!decisive)),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn ordering(a: &Value, b: &Value) -> Result<std::cmp::Ordering, CelError> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)
            .zip(num(b))
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| no_overload("_<_")),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => Err(no_overload("_<_")),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, CelError> {
    use std::cmp::Ordering::*;
    Ok(Value::Bool(match op {
        BinOp::Eq => equal(&a, &b),
        BinOp::Ne => !equal(&a, &b),
        BinOp::Lt => ordering(&a, &b)? == Less,
        BinOp::Le => ordering(&a, &b)? != Greater,
        BinOp::Gt => ordering(&a, &b)? == Greater,
        BinOp::Ge => ordering(&a, &b)? != Less,
        BinOp::In => match &b {
            Value::Array(items) => items.iter().any(|i| equal(i, &a)),
            Value::Object(m) => a.as_str().is_some_and(|k| m.contains_key(k)),
            _ => return Err(no_overload("@in")),
        },
        BinOp::Add => {
            return match (a, b) {
                (Value::String(x), Value::String(y)) => Ok(Value::String(x + &y)),
                (Value::Array(mut x), Value::Array(y)) => {
                    x.extend(y);
                    Ok(Value::Array(x))
                }
                (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                    (Some(x), Some(y)) => x
                        .checked_add(y)
                        .map(Value::from)
                        .ok_or_else(|| CelError::Eval("integer overflow".into())),
                    _ => Ok(Value::from(
                        x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0),
                    )),
                },
                _ => Err(no_overload("_+_")),
            }
        }
        BinOp::Sub => {
            return match (a, b) {
                (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                    (Some(x), Some(y)) => x
                        .checked_sub(y)
                        .map(Value::from)
                        .ok_or_else(|| CelError::Eval("integer overflow".into())),
                    _ => Ok(Value::from(
                        x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0),
                    )),
                },
                _ => Err(no_overload("_-_")),
            }
        }
    }))
}

fn call(name: &str, args: &[Value]) -> Result<Value, CelError> {
    match (name, args) {
        ("size", [Value::String(s)]) => Ok(Value::from(s.chars().count())),
        ("size", [Value::Array(a)]) => Ok(Value::from(a.len())),
        ("size", [Value::Object(m)]) => Ok(Value::from(m.len())),
        ("startsWith", [Value::String(s), Value::String(p)]) => {
            Ok(Value::Bool(s.starts_with(p.as_str())))
        }
        ("endsWith", [Value::String(s), Value::String(p)]) => {
            Ok(Value::Bool(s.ends_with(p.as_str())))
        }
        ("contains", [Value::String(s), Value::String(p)]) => {
            Ok(Value::Bool(s.contains(p.as_str())))
        }
        _ => Err(no_overload(name)),
    }
}

/// The `x-kubernetes-validations` of one schema node, checked against the
/// value at that node. Errors carry the real server's wording; `type_name`
/// is the node's schema type, which the server prints as the "value".
pub fn validate_rules(
    rules: &[Value],
    this: &Value,
    path: &str,
    type_name: &str,
    errs: &mut Vec<crate::apiserver::schema::FieldError>,
) {
    use crate::apiserver::schema::FieldError;
    let shown = Value::String(type_name.to_string());
    for rule in rules {
        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty());
        let program = match compile(text) {
            Ok(p) => p,
            Err(e) => {
                // Deliberately not enforced (outside the supported subset),
                // but never silently: the skipped rule is logged.
                tracing::warn!(rule = text, path, error = %e, "CEL rule not enforced by the emulator");
                continue;
            }
        };
        let field = match rule.get("fieldPath").and_then(Value::as_str) {
            Some(fp) if !fp.is_empty() => format!("{path}{fp}"),
            _ => path.to_string(),
        };
        match program.eval_bool(this) {
            Ok(true) => {}
            Ok(false) => {
                let detail = match message {
                    Some(m) => m.to_string(),
                    None => format!("failed rule: {}", text.trim()),
                };
                errs.push(match rule.get("reason").and_then(Value::as_str) {
                    Some("FieldValueRequired") => FieldError::required(&field, &detail),
                    Some("FieldValueForbidden") => FieldError::forbidden(&field, &detail),
                    Some("FieldValueDuplicate") => FieldError::duplicate(&field, &shown),
                    _ => FieldError::invalid(&field, &shown, &detail),
                });
            }
            Err(e) => {
                let subject = message.unwrap_or(text.trim());
                let detail = match &e {
                    CelError::Eval(m) if m.starts_with("no such overload") => format!(
                        "'{m}': call arguments did not match a supported operator, function or macro signature for rule: {subject}"
                    ),
                    _ => format!("{e} evaluating rule: {subject}"),
                };
                errs.push(FieldError::invalid(path, &shown, &detail));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::schema::{CauseType, FieldError};
    use serde_json::json;

    fn ok(rule: &str, this: Value) -> Result<bool, CelError> {
        compile(rule)?.eval_bool(&this)
    }

    fn collect_rules(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(rs) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                    out.extend(
                        rs.iter()
                            .filter_map(|r| r["rule"].as_str().map(str::to_string)),
                    );
                }
                m.values().for_each(|c| collect_rules(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect_rules(c, out)),
            _ => {}
        }
    }

    /// Every rule in the reference Flux CRDs is inside the subset, so none
    /// is skipped.
    #[test]
    fn every_flux_crd_rule_compiles() {
        let dir = format!(
            "{}/../../shared/reference/flux-crds",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut rules = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let crd: Value = serde_saphyr::from_str(&text).unwrap();
            collect_rules(&crd, &mut rules);
        }
        assert!(rules.len() >= 16, "found {}", rules.len());
        for r in &rules {
            compile(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
    }

    #[test]
    fn flux_rules_evaluate() {
        let sa = "!has(self.serviceAccountName) || (has(self.provider) && (self.provider == 'azure' || self.provider == 'aws'))";
        assert_eq!(ok(sa, json!({"url": "u"})), Ok(true));
        assert_eq!(ok(sa, json!({"serviceAccountName": "x"})), Ok(false));
        assert_eq!(
            ok(
                sa,
                json!({"serviceAccountName": "x", "provider": "generic"})
            ),
            Ok(false)
        );
        assert_eq!(
            ok(sa, json!({"serviceAccountName": "x", "provider": "aws"})),
            Ok(true)
        );
        let chart = "(has(self.chart) && !has(self.chartRef)) || (!has(self.chart)\n  && has(self.chartRef))";
        assert_eq!(ok(chart, json!({})), Ok(false));
        assert_eq!(ok(chart, json!({"chart": {}})), Ok(true));
        assert_eq!(ok(chart, json!({"chartRef": {}})), Ok(true));
        assert_eq!(ok(chart, json!({"chart": {}, "chartRef": {}})), Ok(false));
        let sts = "self.provider != 'aws' || !has(self.sts) || self.sts.provider == 'aws'";
        assert_eq!(
            ok(sts, json!({"provider": "aws", "sts": {"provider": "ldap"}})),
            Ok(false)
        );
        assert_eq!(
            ok(
                sts,
                json!({"provider": "generic", "sts": {"provider": "ldap"}})
            ),
            Ok(true)
        );
        let verify = "!has(self.verify) || self.sourceRef.kind == 'HelmRepository'";
        assert_eq!(
            ok(
                verify,
                json!({"verify": {}, "sourceRef": {"kind": "GitRepository"}})
            ),
            Ok(false)
        );
    }

    #[test]
    fn errors_and_logical_absorption() {
        // Selecting an absent field is an error ...
        assert_eq!(
            ok("self.provider == 'aws'", json!({})),
            Err(CelError::Eval("no such key: provider".into()))
        );
        // ... absorbed by a decisive other side of || / &&, in either order.
        assert_eq!(ok("self.provider == 'aws' || true", json!({})), Ok(true));
        assert_eq!(ok("true || self.x", json!({})), Ok(true));
        assert_eq!(ok("self.x == 1 && false", json!({})), Ok(false));
        assert!(ok("self.x == 1 || false", json!({})).is_err());
        // has() of a nested field needs the parent.
        assert!(ok("has(self.a.b)", json!({})).is_err());
        assert_eq!(ok("has(self.a.b)", json!({"a": {"b": 1}})), Ok(true));
        assert_eq!(ok("has(self.a.b)", json!({"a": {}})), Ok(false));
        assert!(ok("!self.name", json!({"name": "x"})).is_err());
    }

    #[test]
    fn extra_subset() {
        assert_eq!(
            ok(
                "size(self.l) == 2 && self.l.size() < 3",
                json!({"l": [1, 2]})
            ),
            Ok(true)
        );
        assert_eq!(ok("self.s.size() >= 3", json!({"s": "ab"})), Ok(false));
        assert_eq!(ok("self.p in ['a', 'b']", json!({"p": "b"})), Ok(true));
        assert_eq!(ok("'k' in self.m", json!({"m": {"k": 1}})), Ok(true));
        assert_eq!(
            ok("self.n > 1 ? self.n - 1 == 1 : false", json!({"n": 2})),
            Ok(true)
        );
        assert_eq!(ok("self.n + 1 == 3.0", json!({"n": 2})), Ok(true));
        assert_eq!(
            ok(
                "self.s.startsWith(\"ab\") && !self.s.endsWith('x')",
                json!({"s": "abc"})
            ),
            Ok(true)
        );
        assert_eq!(ok("self.l[1] == 'y'", json!({"l": ["x", "y"]})), Ok(true));
        assert_eq!(ok("'it\\'s' == self.s", json!({"s": "it's"})), Ok(true));
    }

    #[test]
    fn outside_the_subset_is_unsupported() {
        for rule in [
            "self.all(x, x > 0)",
            "self.matches('^a')",
            "self == oldSelf",
            "self.x * 2 == 4",
            "{'a': 1} == self",
            "has(self)",
            "self.x ==",
        ] {
            assert!(
                matches!(compile(rule), Err(CelError::Unsupported(_))),
                "{rule}"
            );
        }
    }

    #[test]
    fn rule_errors_have_real_wording() {
        let rules = json!([
            {"rule": "!has(self.serviceAccountName) || has(self.provider)", "message": "serviceAccountName needs provider "},
            {"rule": "has(self.a)"},
            {"rule": "self.b == 'x'", "message": "b must be x"},
            {"rule": "has(self.c)", "message": "c is forbidden", "reason": "FieldValueForbidden", "fieldPath": ".c"},
            {"rule": "self.all(x, true)", "message": "unsupported: skipped"},
        ]);
        let mut errs: Vec<FieldError> = Vec::new();
        validate_rules(
            rules.as_array().unwrap(),
            &json!({"serviceAccountName": "w"}),
            "spec",
            "object",
            &mut errs,
        );
        let lines: Vec<String> = errs.iter().map(FieldError::message_line).collect();
        assert_eq!(
            lines,
            vec![
                "spec: Invalid value: \"object\": serviceAccountName needs provider",
                "spec: Invalid value: \"object\": failed rule: has(self.a)",
                "spec: Invalid value: \"object\": no such key: b evaluating rule: b must be x",
                "spec.c: Forbidden: c is forbidden",
            ]
        );
        assert!(errs[..3].iter().all(|e| e.reason == CauseType::Invalid));
        assert_eq!(errs[3].reason, CauseType::Forbidden);
    }
}
