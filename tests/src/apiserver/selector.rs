//! Label and field selectors as parsed and evaluated by the kube-apiserver.
//!
//! The label selector parser mirrors the token/lookahead structure of
//! apimachinery's `labels.Parse` so that the error strings a client sees for a
//! malformed `?labelSelector=` are the same as from a real server.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::apiserver::schema::{go_quote, is_qualified_name_errors, label_value_errors};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: BTreeSet<String>,
}

impl Requirement {
    fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Equals | Op::In => value.is_some_and(|v| self.values.contains(v)),
            // Absent labels satisfy negative requirements, as upstream.
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::GreaterThan | Op::LessThan => {
                let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self
                    .values
                    .iter()
                    .next()
                    .and_then(|v| v.parse::<i64>().ok())
                else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// A parsed label selector (conjunction of requirements). Empty matches all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Error,
    Eos,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn lex(input: &str) -> Vec<(Tok, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_whitespace(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            out.push((Tok::Eos, String::new()));
            return out;
        }
        if is_special(chars[i]) {
            // Longest match over a run of special symbols, like the upstream lexer.
            let mut buffer = String::new();
            let mut last: Option<(Tok, String)> = None;
            while i < chars.len() && is_special(chars[i]) {
                buffer.push(chars[i]);
                if let Some(t) = keyword(&buffer) {
                    last = Some((t, buffer.clone()));
                    i += 1;
                } else if last.is_some() {
                    break;
                } else {
                    i += 1;
                }
            }
            match last {
                Some(item) => out.push(item),
                None => out.push((
                    Tok::Error,
                    format!("error expected: keyword found '{buffer}'"),
                )),
            }
        } else {
            let start = i;
            while i < chars.len() && !is_whitespace(chars[i]) && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match keyword(&word) {
                Some(t) => out.push((t, word)),
                None => out.push((Tok::Identifier, word)),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        let (mut tok, lit) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::Eos, String::new()));
        if ctx == Ctx::Values && matches!(tok, Tok::In | Tok::NotIn) {
            tok = Tok::Identifier;
        }
        (tok, lit)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let r = self.lookahead(ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::Eos => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::Eos => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Op::Exists | Op::DoesNotExist)) = op {
            return new_requirement(key, op, BTreeSet::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Op>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = is_qualified_name_errors(&lit);
        if !errs.is_empty() {
            // Upstream validates the key against a nil field path, hence "<nil>".
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(&lit),
                errs.join("; ")
            ));
        }
        let (t, _) = self.lookahead(Ctx::Values);
        if (t == Tok::Eos || t == Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Op, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Op::In,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut s = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    s.insert(lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        s.insert(String::new());
                        return Ok(s);
                    }
                    if t2 == Tok::Comma {
                        self.consume(Ctx::Values);
                        s.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Tok::Eos || tok == Tok::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok(BTreeSet::from([lit]));
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

fn new_requirement(key: String, op: Op, values: BTreeSet<String>) -> Result<Requirement, String> {
    let mut errs: Vec<String> = Vec::new();
    if matches!(op, Op::GreaterThan | Op::LessThan) {
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errs.push(format!(
                    "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                    go_quote(v)
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let verrs = label_value_errors(v);
        if !verrs.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(v),
                verrs.join("; ")
            ));
        }
    }
    match errs.len() {
        0 => Ok(Requirement { key, op, values }),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let items = lex(s);
        let mut p = Parser { items, pos: 0 };
        let mut requirements = p.parse()?;
        // Upstream sorts requirements by key; it only matters for String().
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// A parsed field selector (conjunction of `field=value` / `field!=value`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    /// (field, negated, value)
    requirements: Vec<(String, bool, String)>,
}

/// Splits on commas not preceded by a backslash escape, like `fields.splitTerms`.
fn split_terms(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

/// Splits a term at the first `!=`, `==` or `=` (upstream `splitTerm`, which
/// does not look at escapes: only the value is unescaped).
fn split_term(term: &str) -> Option<(String, &'static str, String)> {
    for (i, _) in term.char_indices() {
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((term[..i].to_string(), op, term[i + op.len()..].to_string()));
            }
        }
    }
    None
}

/// `fields.UnescapeValue`, error texts included (an unescaped rune prints
/// as its code point, as Go's `%v` does).
fn unescape_field_value(v: &str) -> Result<String, String> {
    if !v.contains(['\\', '=', ',']) {
        return Ok(v.to_string());
    }
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{n}"
                    ))
                }
                None => {
                    return Err("invalid field selector: invalid escape sequence: \\".to_string())
                }
            },
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            if term.is_empty() {
                continue;
            }
            let Some((field, op, value)) = split_term(&term) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let value = unescape_field_value(&value)?;
            requirements.push((field, op == "!=", value));
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Missing fields compare as the empty string, as the real field-set
    /// extraction yields "" for e.g. the namespace of a cluster-scoped object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(field, negated, value)| {
            let actual = field_value(obj, field);
            (actual == *value) != *negated
        })
    }

    pub fn fields(&self) -> Vec<String> {
        self.requirements.iter().map(|r| r.0.clone()).collect()
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "n", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_matching_table() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app=web, tier in (front,back), !x", true),
            ("n>4", true),
            ("n>5", false),
            ("n<6", true),
            ("missing>1", false),
            ("app>1", false),
            ("missing=", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&o), *want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_empty_value_matches_empty_label() {
        let o = obj(json!({"a": ""}));
        assert!(LabelSelector::parse("a=").unwrap().matches(&o));
        assert!(LabelSelector::parse("a in ()").unwrap().matches(&o));
        assert!(!LabelSelector::parse("a in ()")
            .unwrap()
            .matches(&obj(json!({}))));
    }

    #[test]
    fn label_selector_no_labels_field() {
        let o = json!({"metadata": {"name": "x"}});
        assert!(LabelSelector::parse("!a").unwrap().matches(&o));
        assert!(!LabelSelector::parse("a").unwrap().matches(&o));
        assert!(LabelSelector::parse("a!=b").unwrap().matches(&o));
    }

    #[test]
    fn label_selector_in_keyword_as_key_and_value() {
        // "in" lexes as a keyword but is an identifier in value position.
        let o = obj(json!({"in": "notin"}));
        assert!(LabelSelector::parse("in=notin").unwrap().matches(&o));
        assert!(LabelSelector::parse("in in (notin)").unwrap().matches(&o));
    }

    #[test]
    fn label_selector_errors_match_upstream_wording() {
        let cases: &[(&str, &str)] = &[
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a=b,", "found '', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier, or 'end of string'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"),
        ];
        for (sel, want) in cases {
            let err = LabelSelector::parse(sel).expect_err(sel);
            assert_eq!(&err, want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_invalid_key_and_value() {
        let err = LabelSelector::parse("-a=b").unwrap_err();
        assert!(
            err.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters"),
            "{err}"
        );
        let err = LabelSelector::parse("Foo.com/a=b").unwrap_err();
        assert!(
            err.contains("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"),
            "{err}"
        );
        let err = LabelSelector::parse("a=-b").unwrap_err();
        assert_eq!(
            err,
            "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = "x".repeat(64);
        let err = LabelSelector::parse(&format!("a={long}")).unwrap_err();
        assert!(err.contains("must be no more than 63 characters"), "{err}");
        assert!(LabelSelector::parse("example.com/app=x").is_ok());
        assert!(LabelSelector::parse("a/b/c=x").is_err());
    }

    #[test]
    fn label_selector_lexer_error_token() {
        let err = LabelSelector::parse("a=>b").unwrap_err();
        assert!(err.contains("found '>'"), "{err}");
    }

    #[test]
    fn field_selector_matching_table() {
        let o = json!({"metadata": {"name": "web", "namespace": "ns1"}, "type": "Opaque"});
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name==web", true),
            ("metadata.name!=web", false),
            ("metadata.name=db", false),
            ("metadata.namespace!=ns2", true),
            ("metadata.name=web,metadata.namespace=ns1", true),
            ("metadata.name=web,metadata.namespace=ns2", false),
            ("type=Opaque", true),
            ("spec.missing=", true),
            ("spec.missing!=", false),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&o), *want, "selector {sel:?}");
        }
    }

    #[test]
    fn field_selector_fields_and_errors() {
        let s = FieldSelector::parse("metadata.name=a,status.phase!=Active").unwrap();
        assert_eq!(s.fields(), vec!["metadata.name", "status.phase"]);
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert!(s.matches(&json!({"metadata": {"name": "a,b"}})));
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\x").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a=b").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        let s = FieldSelector::parse(r"metadata.name=a\=b,metadata.namespace!=").unwrap();
        assert!(s.matches(&json!({"metadata": {"name": "a=b", "namespace": "x"}})));
    }

    #[test]
    fn label_selector_set_based_combinations() {
        let sel = LabelSelector::parse("env in (prod, staging), tier notin (db), !legacy").unwrap();
        let cases: &[(Value, bool)] = &[
            (json!({"env": "prod", "tier": "web"}), true),
            (json!({"env": "staging"}), true),
            (json!({"env": "dev"}), false),
            (json!({"env": "prod", "tier": "db"}), false),
            (json!({"env": "prod", "legacy": "true"}), false),
        ];
        for (labels, want) in cases {
            assert_eq!(sel.matches(&obj(labels.clone())), *want, "{labels}");
        }
        assert!(!sel.is_empty());
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
        // Empty elements inside a set are allowed and mean the empty value.
        let sel = LabelSelector::parse("a in (,x)").unwrap();
        assert!(sel.matches(&obj(json!({"a": ""}))));
        assert!(sel.matches(&obj(json!({"a": "x"}))));
    }
}
