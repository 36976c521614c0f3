//! `--kustomization KEY=VALUE [KEY=VALUE ...]`, parsed as the Azure CLI's k8s-configuration
//! extension does: keys in its spellings (`dependsOn`/`depends_on`/`depends-on`/`dependencies`,
//! `sync_interval`/`syncInterval`/`sync-interval`/`interval`, …), durations `1h30m15s` →
//! seconds, `dependsOn` as `["a","b"]`, `[a, b]` or `a,b`.
//!
//! Only what az itself rejects is rejected here: semantic checks (intervals in range, known
//! dependencies, …) belong to the agent, which must be able to receive invalid configurations.
//!
//! It lives in the api crate, next to the wire type it produces, so the fuzz targets (`fuzz/`)
//! reach it without building the testbed; the testbed's `az k8s-configuration flux` look-alike
//! (`tests/src/azcli`) uses it from here.

use crate::fluxconfig::{KustomizationDefinition, PostBuildDefinition};

/// A flag that could not be parsed, with the flag (and key) it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FlagError {
    /// e.g. `--kustomization dependsOn`.
    pub field: String,
    pub message: String,
}

impl FlagError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FlagError {
            field: field.into(),
            message: message.into(),
        }
    }
}

const FLAG: &str = "--kustomization";

const DEPENDENCY_KEYS: [&str; 4] = ["dependencies", "depends_on", "dependsOn", "depends-on"];
const SYNC_INTERVAL_KEYS: [&str; 4] =
    ["interval", "sync_interval", "syncInterval", "sync-interval"];
const RETRY_INTERVAL_KEYS: [&str; 3] = ["retry_interval", "retryInterval", "retry-interval"];
const POST_BUILD_KEYS: [&str; 3] = ["postBuild", "post_build", "post-build"];
const VALID_KEYS: &str = "name, path, prune, force, wait, dependsOn (depends_on, depends-on, \
dependencies), sync_interval (syncInterval, sync-interval, interval), retry_interval \
(retryInterval, retry-interval), timeout, postBuild (post_build, post-build)";

/// Echoes user input in errors, but never much of it.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// serde_json quotes the offending string whole (`invalid type: string "…"`); keep its position.
fn shown_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.chars().count() <= 2 * 64 {
        text
    } else {
        format!("{} (line {} column {})", shown(&text), e.line(), e.column())
    }
}

/// One `--kustomization` occurrence (its space-separated `KEY=VALUE` words) → name and
/// definition. Later keys win over earlier ones, as in az.
pub fn parse_kustomization(
    args: &[String],
) -> Result<(String, KustomizationDefinition), FlagError> {
    let mut name: Option<String> = None;
    let mut def = KustomizationDefinition::default();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(FlagError::new(
                FLAG,
                format!(
                    "usage error: {FLAG} KEY=VALUE [KEY=VALUE ...]; '{}' has no '='",
                    shown(arg)
                ),
            ));
        };
        // The key is user input too: an unknown one is quoted, and shortened, like a value.
        let field = format!("{FLAG} {}", shown(key));
        match key {
            "name" => name = Some(value.to_string()),
            "path" => def.path = Some(value.to_string()),
            "prune" => def.prune = Some(parse_bool(&field, value)?),
            "force" => def.force = Some(parse_bool(&field, value)?),
            "wait" => def.wait = Some(parse_bool(&field, value)?),
            "timeout" => def.timeout_in_seconds = Some(parse_duration(&field, value)?),
            // az appends: `dependsOn=[a] depends_on=[b]` depends on both.
            k if DEPENDENCY_KEYS.contains(&k) => {
                def.depends_on.extend(parse_dependencies(&field, value)?)
            }
            k if SYNC_INTERVAL_KEYS.contains(&k) => {
                def.sync_interval_in_seconds = Some(parse_duration(&field, value)?)
            }
            k if RETRY_INTERVAL_KEYS.contains(&k) => {
                def.retry_interval_in_seconds = Some(parse_duration(&field, value)?)
            }
            k if POST_BUILD_KEYS.contains(&k) => {
                let post: PostBuildDefinition = serde_json::from_str(value).map_err(|e| {
                    FlagError::new(
                        &field,
                        format!(
                            "expected JSON like {{\"substitute\":{{\"k\":\"v\"}},\"substituteFrom\":[{{\"kind\":\"ConfigMap\",\"name\":\"vars\"}}]}}: {}",
                            shown_json_error(&e)
                        ),
                    )
                })?;
                def.post_build = Some(post);
            }
            _ => {
                return Err(FlagError::new(
                    &field,
                    format!("unknown key '{}'; valid keys: {VALID_KEYS}", shown(key)),
                ))
            }
        }
    }
    match name {
        Some(n) if !n.is_empty() => {
            check_name(&n)?;
            Ok((n, def))
        }
        Some(_) => Err(FlagError::new(format!("{FLAG} name"), "must not be empty")),
        None => Err(FlagError::new(
            format!("{FLAG} name"),
            "is required: every kustomization needs name=NAME",
        )),
    }
}

/// The words that [`parse_kustomization`] reads back as exactly `name` and `def`: one key each,
/// `dependsOn` and `postBuild` as JSON, durations as `1h30m` (whole seconds). The fuzz target
/// checks the round trip, which pins down what each accepted key means.
pub fn format_kustomization(
    name: &str,
    def: &KustomizationDefinition,
) -> Result<Vec<String>, serde_json::Error> {
    let mut words = vec![format!("name={name}")];
    if let Some(path) = &def.path {
        words.push(format!("path={path}"));
    }
    for (key, value) in [
        ("prune", def.prune),
        ("force", def.force),
        ("wait", def.wait),
    ] {
        if let Some(v) = value {
            words.push(format!("{key}={v}"));
        }
    }
    for (key, value) in [
        ("timeout", def.timeout_in_seconds),
        ("sync_interval", def.sync_interval_in_seconds),
        ("retry_interval", def.retry_interval_in_seconds),
    ] {
        if let Some(seconds) = value {
            words.push(format!("{key}={}", format_duration(seconds)));
        }
    }
    if !def.depends_on.is_empty() {
        words.push(format!(
            "dependsOn={}",
            serde_json::to_string(&def.depends_on)?
        ));
    }
    if let Some(post) = &def.post_build {
        words.push(format!("postBuild={}", serde_json::to_string(post)?));
    }
    Ok(words)
}

/// Seconds in az's duration syntax; the inverse of [`parse_duration`] for `seconds >= 0` (a
/// negative value has no az spelling and formats as `-Ns`, which is rejected when read back).
pub fn format_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return format!("{seconds}s");
    }
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// az accepts a DNS-1123 subdomain of at most 63 characters (dots allowed; the agent is
/// stricter, which is how a configuration it must reject can be made with this CLI).
fn check_name(name: &str) -> Result<(), FlagError> {
    let field = format!("{FLAG} name");
    if name.len() > 63 {
        return Err(FlagError::new(field, "must be at most 63 characters"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(FlagError::new(
            field,
            format!(
                "'{}' is not a valid name: lower case letters, digits, '-' and '.', starting and \
                 ending with a letter or digit",
                shown(name)
            ),
        ))
    }
}

/// az's three-state flag values.
pub fn parse_bool(field: &str, value: &str) -> Result<bool, FlagError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(FlagError::new(
            field,
            format!("'{}' is not a boolean (true or false)", shown(value)),
        )),
    }
}

/// `["a","b"]` (JSON), `[a, b]` (what a shell leaves of the quoted form), or `a,b`.
pub fn parse_dependencies(field: &str, value: &str) -> Result<Vec<String>, FlagError> {
    let v = value.trim();
    if let Ok(list) = serde_json::from_str::<Vec<String>>(v) {
        return Ok(list);
    }
    let inner = match (v.strip_prefix('['), v.ends_with(']')) {
        (Some(rest), true) => rest.strip_suffix(']').unwrap_or(rest),
        (None, false) => v,
        _ => {
            return Err(FlagError::new(
                field,
                "unbalanced brackets; use [\"a\",\"b\"] or a,b",
            ))
        }
    };
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| item.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
                .unwrap_or(item);
            if unquoted.is_empty() {
                Err(FlagError::new(field, "contains an empty name"))
            } else if unquoted.contains(['"', '\'', '[', ']']) {
                Err(FlagError::new(
                    field,
                    format!("'{}' is not a kustomization name", shown(unquoted)),
                ))
            } else {
                Ok(unquoted.to_string())
            }
        })
        .collect()
}

/// az's duration syntax: `[Nh][Nm][Ns]`, at least one part, in that order → seconds.
pub fn parse_duration(field: &str, value: &str) -> Result<i64, FlagError> {
    let invalid = || {
        FlagError::new(
            field,
            format!(
                "invalid duration '{}'; valid durations look like 10m, 1h, 1h30m, 45s",
                shown(value)
            ),
        )
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut next_unit = 0; // index into "hms": each unit at most once, in order
    let mut parts = 0;
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (index, factor) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(invalid()),
        };
        if digits.is_empty() || index <= next_unit {
            return Err(invalid());
        }
        next_unit = index;
        let n: i64 = digits.parse().map_err(|_| invalid())?;
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        digits.clear();
        parts += 1;
    }
    if !digits.is_empty() || parts == 0 {
        return Err(invalid());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn az_documented_example() {
        // az k8s-configuration flux create … --kustomization name=apps path=./apps/staging
        //   prune=true dependsOn=["infra"]  (the shell keeps the quotes when single-quoted)
        let (name, def) = parse_kustomization(&words(
            r#"name=apps path=./apps/staging prune=true dependsOn=["infra"]"#,
        ))
        .unwrap();
        assert_eq!(name, "apps");
        assert_eq!(def.path.as_deref(), Some("./apps/staging"));
        assert_eq!(def.prune, Some(true));
        assert_eq!(def.depends_on, vec!["infra".to_string()]);
        assert_eq!(def.sync_interval_in_seconds, None);
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Result<KustomizationDefinition, &str>)> = vec![
            ("name=a", Ok(KustomizationDefinition::default())),
            (
                "name=a dependsOn=[infra]",
                Ok(KustomizationDefinition {
                    depends_on: vec!["infra".into()],
                    ..Default::default()
                }),
            ),
            (
                "name=a depends_on=[\"x\",\"y\"]",
                Ok(KustomizationDefinition {
                    depends_on: vec!["x".into(), "y".into()],
                    ..Default::default()
                }),
            ),
            (
                "name=a depends-on=['x',y]",
                Ok(KustomizationDefinition {
                    depends_on: vec!["x".into(), "y".into()],
                    ..Default::default()
                }),
            ),
            (
                "name=a dependencies=x,y",
                Ok(KustomizationDefinition {
                    depends_on: vec!["x".into(), "y".into()],
                    ..Default::default()
                }),
            ),
            (
                "name=a dependsOn=[]",
                Ok(KustomizationDefinition::default()),
            ),
            (
                "name=a dependsOn=[x] depends_on=[y]",
                Ok(KustomizationDefinition {
                    depends_on: vec!["x".into(), "y".into()],
                    ..Default::default()
                }),
            ),
            ("name=A", Err("--kustomization name")),
            ("name=-a", Err("--kustomization name")),
            ("name=a..b", Err("--kustomization name")),
            (
                "name=a sync_interval=10m retry_interval=1h30m timeout=45s",
                Ok(KustomizationDefinition {
                    sync_interval_in_seconds: Some(600),
                    retry_interval_in_seconds: Some(5400),
                    timeout_in_seconds: Some(45),
                    ..Default::default()
                }),
            ),
            (
                "name=a syncInterval=1h sync-interval=2m",
                Ok(KustomizationDefinition {
                    sync_interval_in_seconds: Some(120),
                    ..Default::default()
                }),
            ),
            (
                "name=a interval=1h retryInterval=5m retry-interval=6m",
                Ok(KustomizationDefinition {
                    sync_interval_in_seconds: Some(3600),
                    retry_interval_in_seconds: Some(360),
                    ..Default::default()
                }),
            ),
            (
                "name=a prune=True force=false wait=no",
                Ok(KustomizationDefinition {
                    prune: Some(true),
                    force: Some(false),
                    wait: Some(false),
                    ..Default::default()
                }),
            ),
            (
                r#"name=a postBuild={"substitute":{"region":"eu"}}"#,
                Ok(KustomizationDefinition {
                    post_build: Some(PostBuildDefinition {
                        substitute: BTreeMap::from([("region".into(), "eu".into())]),
                        substitute_from: vec![],
                    }),
                    ..Default::default()
                }),
            ),
            // Semantically dubious but syntactically fine: the agent judges it.
            (
                "name=a path=../../etc dependsOn=[a]",
                Ok(KustomizationDefinition {
                    path: Some("../../etc".into()),
                    depends_on: vec!["a".into()],
                    ..Default::default()
                }),
            ),
            ("path=./x", Err("--kustomization name")),
            ("name=", Err("--kustomization name")),
            ("name=a prune", Err("--kustomization")),
            ("name=a prune=maybe", Err("--kustomization prune")),
            (
                "name=a sync_interval=600",
                Err("--kustomization sync_interval"),
            ),
            ("name=a timeout=10x", Err("--kustomization timeout")),
            ("name=a timeout=m", Err("--kustomization timeout")),
            ("name=a timeout=1m1h", Err("--kustomization timeout")),
            ("name=a timeout=", Err("--kustomization timeout")),
            ("name=a dependsOn=[a", Err("--kustomization dependsOn")),
            ("name=a dependsOn=a,,b", Err("--kustomization dependsOn")),
            ("name=a postBuild={", Err("--kustomization postBuild")),
            ("name=a color=blue", Err("--kustomization color")),
            (
                "name=a timeout=99999999999999999999h",
                Err("--kustomization timeout"),
            ),
        ];
        for (input, expected) in cases {
            let got = parse_kustomization(&words(input));
            match expected {
                Ok(def) => {
                    let (name, got) = got.unwrap_or_else(|e| panic!("{input}: {e}"));
                    assert_eq!(name, "a", "{input}");
                    assert_eq!(got, def, "{input}");
                }
                Err(field) => {
                    let e = got.expect_err(input);
                    assert_eq!(e.field, field, "{input}: {e}");
                }
            }
        }
    }

    #[test]
    fn names_may_have_dots_like_az() {
        let (name, _) = parse_kustomization(&words("name=apps.v2")).unwrap();
        assert_eq!(name, "apps.v2");
        let long = format!("name={}", "a".repeat(64));
        assert!(parse_kustomization(&[long]).is_err());
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let (_, def) = parse_kustomization(&words("name=a path=./x=y")).unwrap();
        assert_eq!(def.path.as_deref(), Some("./x=y"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("f", "1h1m1s"), Ok(3661));
        assert_eq!(parse_duration("f", "0s"), Ok(0));
        assert_eq!(parse_duration("f", "90m"), Ok(5400));
        for bad in ["", "1", "h", "1d", "1s1m", "1h1h", "-1m", "1.5h", " 1m"] {
            assert!(parse_duration("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_reads_back() {
        for input in [
            "name=a",
            r#"name=apps path=./apps/staging prune=true force=false wait=true dependsOn=["infra","x"]"#,
            "name=a timeout=0s sync_interval=1h30m retry_interval=59s",
            r#"name=a postBuild={"substitute":{"region":"eu"},"substituteFrom":[{"kind":"ConfigMap","name":"v"}]}"#,
            "name=a path=./x=y timeout=99999999999s",
        ] {
            let (name, def) = parse_kustomization(&words(input)).unwrap();
            let formatted = format_kustomization(&name, &def).unwrap();
            assert_eq!(
                parse_kustomization(&formatted).unwrap(),
                (name, def),
                "{input} -> {formatted:?}"
            );
        }
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(0), "0s");
    }

    /// The bound on error length the `kustomization_flag` fuzz target checks: an unknown key and
    /// a string in postBuild JSON were quoted whole.
    #[test]
    fn errors_quote_little_input() {
        let long = "x".repeat(5000);
        for args in [
            vec![format!("{long}=1"), "name=a".to_string()],
            vec![
                "name=a".to_string(),
                format!(r#"postBuild={{"substitute":"{long}"}}"#),
            ],
        ] {
            let e = parse_kustomization(&args).expect_err("invalid");
            assert!(e.to_string().len() < 1024, "{e}");
        }
    }
}
