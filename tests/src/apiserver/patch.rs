//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge
//! patch, with error texts modelled on the libraries the kube-apiserver uses
//! (evanphx/json-patch v4 and apimachinery's strategicpatch).

use serde_json::{Map, Value};

use crate::apiserver::schema::{ListType, TypeInfo};

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (the server answers 400).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well-formed but does not apply to the object (422).
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    /// The HTTP status the real server answers with for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(_) => 400,
            PatchError::Unprocessable(_) => 422,
        }
    }
}

fn bad(msg: impl Into<String>) -> PatchError {
    PatchError::BadRequest(msg.into())
}

fn unprocessable(msg: impl Into<String>) -> PatchError {
    PatchError::Unprocessable(msg.into())
}

// ---------------------------------------------------------------------------
// JSON patch
// ---------------------------------------------------------------------------
//
// Modelled on evanphx/json-patch v4 (which the apiserver uses): the parent
// container of the target is looked up first ("doc is missing path"), then
// the container operation runs (object keys, or array indices including
// "-" and negative indices), and its error is wrapped per operation.

const ERR_MISSING: &str = "missing value";
const ERR_INDEX: &str = "invalid index referenced";
const ERR_TEST: &str = "test failed";

fn go_type_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    }
}

/// Splits a JSON pointer into unescaped reference tokens.
fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(unprocessable(format!(
            "JSON pointer must be empty or start with a \"/\": {path}"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Go's strconv.Atoi, error text included.
fn atoi(key: &str) -> Result<i64, String> {
    key.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: invalid syntax", go_quote(key)))
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn invalid_index(idx: i64) -> String {
    format!("Unable to access invalid index: {idx}: {ERR_INDEX}")
}

/// Resolves an index into an array of `len` elements (negative counts from
/// the end, as v4 allows).
fn resolve_index(key: &str, len: usize) -> Result<usize, String> {
    let idx = atoi(key)?;
    let len_i = len as i64;
    if idx >= len_i || idx < -len_i {
        return Err(invalid_index(idx));
    }
    Ok(if idx < 0 { idx + len_i } else { idx } as usize)
}

/// The container holding the last token of `toks` (`findObject`).
fn find_container<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in &toks[..toks.len().saturating_sub(1)] {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = resolve_index(t, a.len()).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    match cur {
        Value::Object(_) | Value::Array(_) => Some(cur),
        _ => None,
    }
}

/// Container `get`: a missing object key is not an error (None).
fn container_get(c: &Value, key: &str) -> Result<Option<Value>, String> {
    match c {
        Value::Object(m) => Ok(m.get(key).cloned()),
        Value::Array(a) => {
            let i = resolve_index(key, a.len())?;
            Ok(a.get(i).cloned())
        }
        _ => Ok(None),
    }
}

fn container_add(c: &mut Value, key: &str, val: Value) -> Result<(), String> {
    match c {
        Value::Object(m) => {
            m.insert(key.to_string(), val);
            Ok(())
        }
        Value::Array(a) => {
            if key == "-" {
                a.push(val);
                return Ok(());
            }
            let idx = atoi(key)
                .map_err(|e| format!("value was not a proper array index: '{key}': {e}"))?;
            let new_len = a.len() as i64 + 1;
            if idx >= new_len || idx < -new_len {
                return Err(invalid_index(idx));
            }
            let i = if idx < 0 { idx + new_len } else { idx } as usize;
            a.insert(i, val);
            Ok(())
        }
        _ => Err(ERR_MISSING.to_string()),
    }
}

fn container_set(c: &mut Value, key: &str, val: Value) -> Result<(), String> {
    match c {
        Value::Object(m) => {
            m.insert(key.to_string(), val);
            Ok(())
        }
        Value::Array(a) => {
            let i = resolve_index(key, a.len())?;
            a[i] = val;
            Ok(())
        }
        _ => Err(ERR_MISSING.to_string()),
    }
}

fn container_remove(c: &mut Value, key: &str) -> Result<Value, String> {
    match c {
        Value::Object(m) => m
            .remove(key)
            .ok_or_else(|| format!("Unable to remove nonexistent key: {key}: {ERR_MISSING}")),
        Value::Array(a) => {
            let i = resolve_index(key, a.len())?;
            Ok(a.remove(i))
        }
        _ => Err(ERR_MISSING.to_string()),
    }
}

/// JSON equality as Go sees it after decoding: all numbers are float64.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn apply_op(doc: &mut Value, o: &Map<String, Value>) -> Result<(), PatchError> {
    let kind = o.get("op").and_then(Value::as_str).unwrap_or("unknown");
    let field = |name: &str| -> Result<&str, PatchError> {
        o.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| unprocessable(format!("operation missing {name} field: {ERR_MISSING}")))
    };
    // A missing value is applied as null, as v4 does.
    let value = || o.get("value").cloned().unwrap_or(Value::Null);
    match kind {
        "add" => {
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let Some(last) = toks.last() else {
                *doc = value();
                return Ok(());
            };
            let c = find_container(doc, &toks).ok_or_else(|| {
                unprocessable(format!(
                    "add operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
                ))
            })?;
            container_add(c, last, value())
                .map_err(|e| unprocessable(format!("error in add for path: '{path}': {e}")))
        }
        "remove" => {
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let Some(last) = toks.last() else {
                *doc = Value::Null;
                return Ok(());
            };
            let c = find_container(doc, &toks).ok_or_else(|| {
                unprocessable(format!(
                    "remove operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
                ))
            })?;
            container_remove(c, last)
                .map(|_| ())
                .map_err(|e| unprocessable(format!("error in remove for path: '{path}': {e}")))
        }
        "replace" => {
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let Some(last) = toks.last() else {
                *doc = value();
                return Ok(());
            };
            let c = find_container(doc, &toks).ok_or_else(|| {
                unprocessable(format!(
                    "replace operation does not apply: doc is missing path: {path}: {ERR_MISSING}"
                ))
            })?;
            match container_get(c, last) {
                Ok(Some(_)) => {}
                _ => {
                    return Err(unprocessable(format!(
                    "replace operation does not apply: doc is missing key: {path}: {ERR_MISSING}"
                )))
                }
            }
            container_set(c, last, value())
                .map_err(|e| unprocessable(format!("error in remove for path: '{path}': {e}")))
        }
        "move" => {
            let from = field("from")?;
            let ftoks = parse_pointer(from)?;
            let fkey = ftoks.last().cloned().unwrap_or_default();
            let c = find_container(doc, &ftoks).ok_or_else(|| {
                unprocessable(format!(
                    "move operation does not apply: doc is missing from path: {from}: {ERR_MISSING}"
                ))
            })?;
            let val = match container_get(c, &fkey) {
                Ok(v) => v.unwrap_or(Value::Null),
                Err(e) => {
                    return Err(unprocessable(format!(
                        "error in move for path: '{fkey}': {e}"
                    )))
                }
            };
            container_remove(c, &fkey)
                .map_err(|e| unprocessable(format!("error in move for path: '{fkey}': {e}")))?;
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let key = toks.last().cloned().unwrap_or_default();
            let c = find_container(doc, &toks).ok_or_else(|| {
                unprocessable(format!(
                    "move operation does not apply: doc is missing destination path: {path}: {ERR_MISSING}"
                ))
            })?;
            container_add(c, &key, val)
                .map_err(|e| unprocessable(format!("error in move for path: '{path}': {e}")))
        }
        "copy" => {
            let from = field("from")?;
            let ftoks = parse_pointer(from)?;
            let fkey = ftoks.last().cloned().unwrap_or_default();
            let c = find_container(doc, &ftoks).ok_or_else(|| {
                unprocessable(format!(
                    "copy operation does not apply: doc is missing from path: {from}: {ERR_MISSING}"
                ))
            })?;
            let val = container_get(c, &fkey)
                .map_err(|e| unprocessable(format!("error in copy for from: '{from}': {e}")))?
                .unwrap_or(Value::Null);
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let key = toks.last().cloned().unwrap_or_default();
            let c = find_container(doc, &toks).ok_or_else(|| {
                unprocessable(format!(
                    "copy operation does not apply: doc is missing destination path: {path}: {ERR_MISSING}"
                ))
            })?;
            container_add(c, &key, val)
                .map_err(|e| unprocessable(format!("error while adding value during copy: {e}")))
        }
        "test" => {
            let path = field("path")?;
            let toks = parse_pointer(path)?;
            let expected = o.get("value").cloned().unwrap_or(Value::Null);
            let actual = match toks.last() {
                None => Some(doc.clone()),
                Some(last) => {
                    let c = find_container(doc, &toks).ok_or_else(|| {
                        unprocessable(format!(
                            "test operation does not apply: is missing path: {path}: {ERR_MISSING}"
                        ))
                    })?;
                    container_get(c, last).map_err(|e| {
                        unprocessable(format!("error in test for path: '{path}': {e}"))
                    })?
                }
            };
            let ok = match actual {
                Some(v) => json_equal(&v, &expected),
                None => expected.is_null(),
            };
            if ok {
                Ok(())
            } else {
                Err(unprocessable(format!(
                    "testing value {path} failed: {ERR_TEST}"
                )))
            }
        }
        other => Err(unprocessable(format!("Unexpected kind: {other}"))),
    }
}

/// Applies an RFC 6902 patch; all or nothing.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(bad(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_type_name(patch)
        )));
    };
    let mut out = doc.clone();
    for op in ops {
        let Value::Object(o) = op else {
            return Err(bad(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                go_type_name(op)
            )));
        };
        apply_op(&mut out, o)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// JSON merge patch
// ---------------------------------------------------------------------------

/// Applies an RFC 7386 merge patch; the patch must be a JSON object.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(bad("Invalid JSON Patch"));
    }
    Ok(merge_value(Some(doc), patch))
}

fn merge_value(target: Option<&Value>, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Some(Value::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_value(out.get(k), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";

/// Applies a strategic merge patch using list semantics from `types`.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    types: &TypeInfo,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(bad(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_type_name(patch)
        )));
    };
    let empty = Map::new();
    let original = doc.as_object().unwrap_or(&empty);
    match merge_map(original, p, types)? {
        Some(m) => Ok(Value::Object(m)),
        // `$patch: delete` at the root empties the object.
        None => Ok(Value::Object(Map::new())),
    }
}

/// Returns None when the map is deleted by `$patch: delete`.
fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    types: &TypeInfo,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "replace" => {
            let mut p = patch.clone();
            p.remove(DIRECTIVE);
            return Ok(Some(clean(&p, types)?));
        }
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => {
            return Err(bad(format!(
                "Unknown patch type: {} in map: {}",
                other.as_str().unwrap_or(&other.to_string()),
                Value::Object(patch.clone())
            )))
        }
    }

    let mut out = original.clone();

    if let Some(rk) = patch.get(RETAIN_KEYS) {
        let Value::Array(keys) = rk else {
            return Err(bad("$retainKeys must be a list of strings"));
        };
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        for k in patch.keys() {
            if !k.starts_with('$') && !keep.contains(&k.as_str()) {
                return Err(bad(format!("not present in $retainKeys list: {k}")));
            }
        }
        out.retain(|k, _| keep.contains(&k.as_str()));
    }

    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE_PREFIX) {
            let Value::Array(del) = v else {
                return Err(bad(format!("{k} must be a list")));
            };
            if let Some(Value::Array(cur)) = out.get_mut(field) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with(SET_ORDER_PREFIX) || k == DIRECTIVE || k == RETAIN_KEYS {
            // $setElementOrder only affects ordering; merged lists keep
            // original order with new items appended.
            continue;
        }
        if k.starts_with('$') {
            return Err(bad(format!("unknown strategic merge patch directive: {k}")));
        }
        let child = types.child(k);
        if v.is_null() {
            out.remove(k);
            continue;
        }
        match v {
            Value::Object(pm) => {
                let merged = match out.get(k) {
                    Some(Value::Object(om)) => merge_map(om, pm, child)?,
                    _ => merge_map(&Map::new(), pm, child)?,
                };
                match merged {
                    Some(m) => {
                        out.insert(k.clone(), Value::Object(m));
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
            Value::Array(pl) => {
                let ol = match out.get(k) {
                    Some(Value::Array(a)) => a.as_slice(),
                    _ => &[],
                };
                let merged = merge_list(ol, pl, child)?;
                out.insert(k.clone(), Value::Array(merged));
            }
            scalar => {
                out.insert(k.clone(), scalar.clone());
            }
        }
    }
    Ok(Some(out))
}

/// Strips nulls and directives from a value that has no original to merge
/// with, as merging into an empty value does upstream.
fn clean(patch: &Map<String, Value>, types: &TypeInfo) -> Result<Map<String, Value>, PatchError> {
    Ok(merge_map(&Map::new(), patch, types)?.unwrap_or_default())
}

fn merge_list(
    original: &[Value],
    patch: &[Value],
    types: &TypeInfo,
) -> Result<Vec<Value>, PatchError> {
    let is_replace = |v: &Value| {
        v.as_object()
            .and_then(|m| m.get(DIRECTIVE))
            .and_then(Value::as_str)
            == Some("replace")
    };
    match types.patch_list_type() {
        ListType::Atomic => {
            let mut out = Vec::new();
            for item in patch {
                out.push(match item {
                    Value::Object(m) => Value::Object(clean(m, types.elem())?),
                    other => other.clone(),
                });
            }
            Ok(out)
        }
        ListType::Set => {
            if patch.iter().any(is_replace) {
                return Ok(patch.iter().filter(|v| !is_replace(v)).cloned().collect());
            }
            let mut out = original.to_vec();
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        ListType::Map(keys) => {
            let Some(key) = keys.first() else {
                return Ok(patch.to_vec());
            };
            let elem = types.elem();
            if patch.iter().any(is_replace) {
                let mut out = Vec::new();
                for item in patch.iter().filter(|v| !is_replace(v)) {
                    out.push(match item {
                        Value::Object(m) => Value::Object(clean(m, elem)?),
                        other => other.clone(),
                    });
                }
                return Ok(out);
            }
            let mut out: Vec<Value> = original.to_vec();
            for item in patch {
                let Value::Object(pm) = item else {
                    return Err(bad(format!(
                        "the list to merge by key {key} contains a non-map element: {item}"
                    )));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(bad(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                let directive = pm.get(DIRECTIVE).and_then(Value::as_str);
                match (pos, directive) {
                    (Some(i), Some("delete")) => {
                        out.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        let empty = Map::new();
                        let om = out[i].as_object().unwrap_or(&empty);
                        match merge_map(om, pm, elem)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (None, _) => {
                        if let Some(m) = merge_map(&Map::new(), pm, elem)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops_table() {
        let doc = json!({"a": {"b": [1, 2, 3]}, "c": "x", "k/e~y": 1});
        let cases: Vec<(Value, Value)> = vec![
            (
                json!([{"op": "add", "path": "/d", "value": 4}]),
                json!({"a": {"b": [1, 2, 3]}, "c": "x", "k/e~y": 1, "d": 4}),
            ),
            (
                json!([{"op": "add", "path": "/a/b/-", "value": 4}]),
                json!({"a": {"b": [1, 2, 3, 4]}, "c": "x", "k/e~y": 1}),
            ),
            (
                json!([{"op": "add", "path": "/a/b/0", "value": 0}]),
                json!({"a": {"b": [0, 1, 2, 3]}, "c": "x", "k/e~y": 1}),
            ),
            (
                json!([{"op": "add", "path": "/a/b/3", "value": 9}]),
                json!({"a": {"b": [1, 2, 3, 9]}, "c": "x", "k/e~y": 1}),
            ),
            (
                json!([{"op": "remove", "path": "/a/b/1"}]),
                json!({"a": {"b": [1, 3]}, "c": "x", "k/e~y": 1}),
            ),
            (
                json!([{"op": "remove", "path": "/k~1e~0y"}]),
                json!({"a": {"b": [1, 2, 3]}, "c": "x"}),
            ),
            (
                json!([{"op": "replace", "path": "/c", "value": {"n": 1}}]),
                json!({"a": {"b": [1, 2, 3]}, "c": {"n": 1}, "k/e~y": 1}),
            ),
            (
                json!([{"op": "move", "from": "/c", "path": "/a/c"}]),
                json!({"a": {"b": [1, 2, 3], "c": "x"}, "k/e~y": 1}),
            ),
            (
                json!([{"op": "copy", "from": "/a/b/0", "path": "/z"}]),
                json!({"a": {"b": [1, 2, 3]}, "c": "x", "k/e~y": 1, "z": 1}),
            ),
            (
                json!([{"op": "test", "path": "/a/b/2", "value": 3.0}, {"op": "remove", "path": "/c"}]),
                json!({"a": {"b": [1, 2, 3]}, "k/e~y": 1}),
            ),
            (
                json!([{"op": "replace", "path": "", "value": [1]}]),
                json!([1]),
            ),
            (json!([]), doc.clone()),
        ];
        for (patch, want) in cases {
            assert_eq!(json_patch(&doc, &patch).unwrap(), want, "patch {patch}");
        }
    }

    #[test]
    fn json_patch_errors() {
        let doc = json!({"a": {"b": [1]}, "c": "x"});
        let cases: Vec<(Value, u16, &str)> = vec![
            (
                json!([{"op": "test", "path": "/c", "value": "y"}]),
                422,
                "testing value /c failed: test failed",
            ),
            (
                json!([{"op": "test", "path": "/x/y", "value": 1}]),
                422,
                "test operation does not apply: is missing path: /x/y: missing value",
            ),
            (
                json!([{"op": "remove", "path": "/nope"}]),
                422,
                "error in remove for path: '/nope': Unable to remove nonexistent key: nope: missing value",
            ),
            (
                json!([{"op": "remove", "path": "/x/nope"}]),
                422,
                "remove operation does not apply: doc is missing path: \"/x/nope\": missing value",
            ),
            (
                json!([{"op": "replace", "path": "/nope", "value": 1}]),
                422,
                "replace operation does not apply: doc is missing key: /nope: missing value",
            ),
            (
                json!([{"op": "add", "path": "/x/y", "value": 1}]),
                422,
                "add operation does not apply: doc is missing path: \"/x/y\": missing value",
            ),
            (
                json!([{"op": "add", "path": "/a/b/5", "value": 1}]),
                422,
                "error in add for path: '/a/b/5': Unable to access invalid index: 5: invalid index referenced",
            ),
            (
                json!([{"op": "add", "path": "/a/b/x", "value": 1}]),
                422,
                "error in add for path: '/a/b/x': value was not a proper array index: 'x': strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                json!([{"op": "remove", "path": "/a/b/3"}]),
                422,
                "error in remove for path: '/a/b/3': Unable to access invalid index: 3: invalid index referenced",
            ),
            (json!([{"op": "bogus", "path": "/c"}]), 422, "Unexpected kind: bogus"),
            (
                json!([{"op": "add", "value": 1}]),
                422,
                "operation missing path field: missing value",
            ),
            (
                json!([{"op": "copy", "from": "/q/r", "path": "/z"}]),
                422,
                "copy operation does not apply: doc is missing from path: /q/r: missing value",
            ),
            (
                json!([{"op": "move", "from": "/a", "path": "/a/z"}]),
                422,
                "move operation does not apply: doc is missing destination path: /a/z: missing value",
            ),
            (
                json!({"op": "add"}),
                400,
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
            ),
        ];
        for (patch, code, msg) in cases {
            let err = json_patch(&doc, &patch).expect_err(&patch.to_string());
            assert_eq!(err.status_code(), code, "{patch}");
            assert_eq!(err.to_string(), msg, "{patch}");
        }
    }

    #[test]
    fn json_patch_negative_index_and_missing_value() {
        let doc = json!({"l": [1, 2, 3]});
        let out = json_patch(&doc, &json!([{"op": "remove", "path": "/l/-1"}])).unwrap();
        assert_eq!(out, json!({"l": [1, 2]}));
        let out = json_patch(&doc, &json!([{"op": "add", "path": "/n"}])).unwrap();
        assert_eq!(out, json!({"l": [1, 2, 3], "n": null}));
        let out = json_patch(
            &doc,
            &json!([{"op": "test", "path": "/missing", "value": null}]),
        )
        .unwrap();
        assert_eq!(out, doc);
    }

    #[test]
    fn json_patch_is_atomic_on_failure() {
        let doc = json!({"a": 1});
        let patch = json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}]);
        assert!(json_patch(&doc, &patch).is_err());
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn merge_patch_rfc7386_examples() {
        let cases: Vec<(Value, Value, Value)> = vec![
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merge_patch(&doc, &patch).unwrap(), want, "{doc} + {patch}");
        }
        let err = merge_patch(&json!({}), &json!([1])).unwrap_err();
        assert_eq!(err.status_code(), 400);
    }

    fn cm_types() -> TypeInfo {
        TypeInfo::builtin("v1", "ConfigMap")
    }

    #[test]
    fn smp_maps_merge_and_null_deletes() {
        let doc =
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": "v"}});
        let patch = json!({"metadata": {"labels": {"x": null, "z": "3"}}, "data": {"k2": "v2"}});
        let got = strategic_merge_patch(&doc, &patch, &cm_types()).unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"name": "a", "labels": {"y": "2", "z": "3"}}, "data": {"k": "v", "k2": "v2"}})
        );
    }

    #[test]
    fn smp_map_list_merges_by_key() {
        let doc = json!({"metadata": {"name": "a", "ownerReferences": [
            {"uid": "1", "name": "o1", "kind": "K"},
            {"uid": "2", "name": "o2", "kind": "K"}]}});
        let patch = json!({"metadata": {"ownerReferences": [
            {"uid": "2", "name": "renamed"},
            {"uid": "3", "name": "o3", "kind": "K"},
            {"uid": "1", "$patch": "delete"}]}});
        let got = strategic_merge_patch(&doc, &patch, &cm_types()).unwrap();
        assert_eq!(
            got["metadata"]["ownerReferences"],
            json!([{"uid": "2", "name": "renamed", "kind": "K"}, {"uid": "3", "name": "o3", "kind": "K"}])
        );
    }

    #[test]
    fn smp_builtin_list_strategies_follow_patch_strategy() {
        // ServiceAccount.imagePullSecrets has no patch strategy: replaced.
        let sa = TypeInfo::builtin("v1", "ServiceAccount");
        let doc = json!({"secrets": [{"name": "a"}], "imagePullSecrets": [{"name": "pull-a"}]});
        let got = strategic_merge_patch(
            &doc,
            &json!({"secrets": [{"name": "b"}], "imagePullSecrets": [{"name": "pull-b"}]}),
            &sa,
        )
        .unwrap();
        assert_eq!(got["imagePullSecrets"], json!([{"name": "pull-b"}]));
        assert_eq!(got["secrets"], json!([{"name": "a"}, {"name": "b"}]));
        // Namespace spec.finalizers is atomic.
        let ns = TypeInfo::builtin("v1", "Namespace");
        let got = strategic_merge_patch(
            &json!({"spec": {"finalizers": ["kubernetes"]}}),
            &json!({"spec": {"finalizers": ["x"]}}),
            &ns,
        )
        .unwrap();
        assert_eq!(got["spec"]["finalizers"], json!(["x"]));
        // Service ports merge on `port` alone (patchMergeKey), even when the
        // protocol differs.
        let svc = TypeInfo::builtin("v1", "Service");
        let got = strategic_merge_patch(
            &json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            &svc,
        )
        .unwrap();
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 9090}])
        );
        // RBAC rules are atomic.
        let role = TypeInfo::builtin("rbac.authorization.k8s.io/v1", "Role");
        let got = strategic_merge_patch(
            &json!({"rules": [{"verbs": ["get"]}]}),
            &json!({"rules": [{"verbs": ["list"]}]}),
            &role,
        )
        .unwrap();
        assert_eq!(got["rules"], json!([{"verbs": ["list"]}]));
        // CRD status.conditions has no patch strategy.
        let crd = TypeInfo::builtin("apiextensions.k8s.io/v1", "CustomResourceDefinition");
        let got = strategic_merge_patch(
            &json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}}),
            &json!({"status": {"conditions": [{"type": "B", "status": "True"}]}}),
            &crd,
        )
        .unwrap();
        assert_eq!(
            got["status"]["conditions"],
            json!([{"type": "B", "status": "True"}])
        );
    }

    #[test]
    fn smp_conditions_merge_by_type() {
        let t = TypeInfo::builtin("v1", "Namespace");
        let doc = json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]}});
        let patch = json!({"status": {"conditions": [{"type": "B", "status": "True"}]}});
        let got = strategic_merge_patch(&doc, &patch, &t).unwrap();
        assert_eq!(
            got["status"]["conditions"],
            json!([{"type": "A", "status": "True"}, {"type": "B", "status": "True"}])
        );
    }

    #[test]
    fn smp_set_list_and_delete_from_primitive_list() {
        let doc = json!({"metadata": {"name": "a", "finalizers": ["x", "y"]}});
        let got = strategic_merge_patch(
            &doc,
            &json!({"metadata": {"finalizers": ["y", "z"]}}),
            &cm_types(),
        )
        .unwrap();
        assert_eq!(got["metadata"]["finalizers"], json!(["x", "y", "z"]));
        let got = strategic_merge_patch(
            &doc,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "$setElementOrder/finalizers": ["y"]}}),
            &cm_types(),
        )
        .unwrap();
        assert_eq!(got["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn smp_atomic_list_replaced() {
        let t = TypeInfo::builtin("v1", "ConfigMap");
        let doc = json!({"spec": {"l": [1, 2]}});
        let got = strategic_merge_patch(&doc, &json!({"spec": {"l": [3]}}), &t).unwrap();
        assert_eq!(got, json!({"spec": {"l": [3]}}));
    }

    #[test]
    fn smp_patch_replace_and_delete_directives() {
        let t = cm_types();
        let doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"name": "n"}});
        let got =
            strategic_merge_patch(&doc, &json!({"data": {"$patch": "replace", "c": "3"}}), &t)
                .unwrap();
        assert_eq!(got["data"], json!({"c": "3"}));
        let got = strategic_merge_patch(&doc, &json!({"data": {"$patch": "delete"}}), &t).unwrap();
        assert!(got.get("data").is_none());
        let doc = json!({"metadata": {"ownerReferences": [{"uid": "1"}, {"uid": "2"}]}});
        let got = strategic_merge_patch(
            &doc,
            &json!({"metadata": {"ownerReferences": [{"$patch": "replace"}, {"uid": "9"}]}}),
            &t,
        )
        .unwrap();
        assert_eq!(got["metadata"]["ownerReferences"], json!([{"uid": "9"}]));
        let err =
            strategic_merge_patch(&doc, &json!({"data": {"$patch": "frob"}}), &t).unwrap_err();
        assert!(
            err.to_string().starts_with("Unknown patch type: frob"),
            "{err}"
        );
    }

    #[test]
    fn smp_retain_keys() {
        let t = cm_types();
        let doc = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"x": 1}}}});
        let patch =
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate"}}});
        let got = strategic_merge_patch(&doc, &patch, &t).unwrap();
        assert_eq!(
            got,
            json!({"spec": {"strategy": {"type": "RollingUpdate"}}})
        );
        let bad_patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "other": 1}}});
        assert!(strategic_merge_patch(&doc, &bad_patch, &t).is_err());
    }

    #[test]
    fn smp_missing_merge_key_is_error() {
        let doc = json!({"metadata": {"ownerReferences": []}});
        let err = strategic_merge_patch(
            &doc,
            &json!({"metadata": {"ownerReferences": [{"name": "x"}]}}),
            &cm_types(),
        )
        .unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert!(
            err.to_string()
                .contains("does not contain declared merge key: uid"),
            "{err}"
        );
    }

    #[test]
    fn smp_new_nested_objects_drop_nulls() {
        let got =
            strategic_merge_patch(&json!({}), &json!({"a": {"b": null, "c": 1}}), &cm_types())
                .unwrap();
        assert_eq!(got, json!({"a": {"c": 1}}));
        assert!(strategic_merge_patch(&json!({}), &json!([1]), &cm_types()).is_err());
    }

    #[test]
    fn smp_container_list_merges_by_name() {
        let t = TypeInfo::builtin("apps/v1", "Deployment");
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "s:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}]}]}}}});
        let got = strategic_merge_patch(&doc, &patch, &t).unwrap();
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "app", "image": "a:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "side", "image": "s:1"}])
        );
    }
}
