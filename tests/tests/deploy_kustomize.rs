//! The install manifests: `deploy/kustomize` renders with the real `kubectl kustomize`, applies
//! cleanly with `kubectl apply --server-side` to the API emulator (and re-applies as a no-op),
//! and stays equal in content to the Helm chart rendered with its default values. Helm cannot be
//! installed on the build machines, so the chart is rendered here by a tiny interpreter of the
//! handful of template expressions it uses; an expression it does not know fails the test,
//! which keeps the chart's templates plain.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const NAMESPACE: &str = "flux-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kustomize_dir() -> String {
    repo()
        .join("deploy/kustomize")
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

/// Splits a YAML stream into its documents, skipping empty (comment-only) ones.
fn documents(stream: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |text: &mut String| {
        let has_content = text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            let doc: Value = serde_saphyr::from_str(text)
                .unwrap_or_else(|e| panic!("YAML document does not parse: {e}\n{text}"));
            docs.push(doc);
        }
        text.clear();
    };
    for line in stream.lines() {
        if line.trim_end() == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

fn key(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().expect("kind").to_string(),
        doc["metadata"]["name"].as_str().expect("name").to_string(),
    )
}

fn by_key(docs: Vec<Value>) -> BTreeMap<(String, String), Value> {
    let mut map = BTreeMap::new();
    for d in docs {
        let k = key(&d);
        assert!(map.insert(k.clone(), d).is_none(), "{k:?} appears twice");
    }
    map
}

// ---------------------------------------------------------------------------
// A minimal renderer for the chart's templates with values.yaml.

struct Chart {
    values: Value,
}

impl Chart {
    fn load() -> Chart {
        let text = std::fs::read_to_string(repo().join("deploy/helm/fluxconfig/values.yaml"))
            .expect("values.yaml");
        Chart {
            values: serde_saphyr::from_str(&text).expect("values.yaml parses"),
        }
    }

    fn lookup(&self, path: &str) -> Value {
        if path == ".Release.Namespace" {
            return json!(NAMESPACE);
        }
        let rest = path
            .strip_prefix(".Values")
            .unwrap_or_else(|| panic!("unsupported template reference {path}"));
        let mut v = &self.values;
        for part in rest.split('.').filter(|p| !p.is_empty()) {
            v = v
                .get(part)
                .unwrap_or_else(|| panic!("values.yaml has no {path}"));
        }
        v.clone()
    }

    /// Go template truthiness for the values used in `if`.
    fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => panic!("not a scalar: {other}"),
        }
    }

    fn eval(&self, expr: &str) -> String {
        let mut stages = expr.split('|').map(str::trim);
        let head: Vec<&str> = stages
            .next()
            .expect("expression")
            .split_whitespace()
            .collect();
        let mut value = match head.as_slice() {
            [path] => self.lookup(path),
            ["index", base, keys @ ..] => {
                let mut v = self.lookup(base);
                for k in keys {
                    v = v[k.trim_matches('"')].clone();
                }
                assert!(!v.is_null(), "values.yaml has no {expr}");
                v
            }
            ["dir", path] => {
                let p = Self::scalar(&self.lookup(path));
                json!(p.rsplit_once('/').expect("a directory").0)
            }
            ["base", path] => {
                let p = Self::scalar(&self.lookup(path));
                json!(p.rsplit_once('/').map_or(p.as_str(), |(_, b)| b))
            }
            // JSON is YAML, so a flow mapping stands in for Helm's block output.
            ["toYaml", path] => json!(serde_json::to_string(&self.lookup(path)).unwrap()),
            _ => panic!("unsupported template expression {{{{ {expr} }}}}"),
        };
        for stage in stages {
            let words: Vec<&str> = stage.split_whitespace().collect();
            value = match words.as_slice() {
                ["quote"] => json!(serde_json::to_string(&Self::scalar(&value)).unwrap()),
                ["nindent", n] => {
                    let pad = " ".repeat(n.parse().expect("indent"));
                    let text = Self::scalar(&value);
                    json!(format!(
                        "\n{}",
                        text.lines()
                            .map(|l| format!("{pad}{l}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ))
                }
                _ => panic!("unsupported template function {stage}"),
            };
        }
        Self::scalar(&value)
    }

    /// Renders one template: `{{ expr }}`, `{{- ... }}` / `{{ ... -}}` whitespace trimming, and
    /// `if` / `else` / `end` on values.
    fn render(&self, template: &str) -> String {
        let action = regex::Regex::new(r"(?s)\{\{(-?)\s*(.*?)\s*(-?)\}\}").unwrap();
        let mut out = String::new();
        // Each open `if`: (emitting before it, this branch taken).
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let emitting = |stack: &[(bool, bool)]| stack.iter().all(|(outer, taken)| *outer && *taken);
        let mut rest = template;
        let mut trim_next = false;
        while let Some(m) = action.captures(rest) {
            let whole = m.get(0).unwrap();
            let mut text = &rest[..whole.start()];
            if trim_next {
                text = text.trim_start();
            }
            if emitting(&stack) {
                out.push_str(text);
            }
            if &m[1] == "-" && emitting(&stack) {
                out.truncate(out.trim_end().len());
            }
            let body = m[2].trim();
            if let Some(cond) = body.strip_prefix("if ") {
                let outer = emitting(&stack);
                let taken = outer && Self::truthy(&self.lookup(cond.trim()));
                stack.push((outer, taken));
            } else if body == "else" {
                let (outer, taken) = stack.pop().expect("else without if");
                stack.push((outer, !taken));
            } else if body == "end" {
                stack.pop().expect("end without if");
            } else if emitting(&stack) {
                out.push_str(&self.eval(body));
            }
            trim_next = &m[3] == "-";
            rest = &rest[whole.end()..];
        }
        assert!(stack.is_empty(), "unterminated if");
        out.push_str(if trim_next { rest.trim_start() } else { rest });
        out
    }

    /// Every object of the chart with its default values (templates plus crds/).
    fn objects(&self) -> BTreeMap<(String, String), Value> {
        let dir = repo().join("deploy/helm/fluxconfig");
        let mut docs = Vec::new();
        for sub in ["templates", "crds"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
                .expect("chart directory")
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                let rendered = if sub == "templates" {
                    self.render(&text)
                } else {
                    text
                };
                docs.extend(documents(&rendered));
            }
        }
        by_key(docs)
    }
}

/// The kustomize output without what kustomize adds on top of the plain manifests.
fn strip_kustomize_additions(mut doc: Value) -> Value {
    let meta = doc["metadata"].as_object_mut().expect("metadata");
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        labels.remove("app.kubernetes.io/part-of");
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    doc
}

async fn render_kustomize(env: &Env) -> BTreeMap<(String, String), Value> {
    let out = env.kubectl(&["kustomize", &kustomize_dir()]).await;
    by_key(documents(out.ok()))
}

/// Runs kubectl, asserting success, and returns its stdout.
async fn kubectl_ok(env: &Env, args: &[&str]) -> String {
    env.kubectl(args).await.ok().to_string()
}

fn expected_objects() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "CustomResourceDefinition",
            "fluxconfigs.clusterconfig.azure.com",
        ),
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "fluxconfig-agent"),
        ("ServiceAccount", "fluxconfig-controller"),
        ("ClusterRole", "fluxconfig-agent"),
        ("ClusterRole", "fluxconfig-controller"),
        ("ClusterRoleBinding", "fluxconfig-agent"),
        ("ClusterRoleBinding", "fluxconfig-controller"),
        ("Role", "fluxconfig-controller-leader-election"),
        ("RoleBinding", "fluxconfig-controller-leader-election"),
        ("ConfigMap", "fluxconfig-agent-config"),
        ("Service", "fluxconfig-agent-metrics"),
        ("Service", "fluxconfig-controller-metrics"),
        ("Deployment", "fluxconfig-agent"),
        ("Deployment", "fluxconfig-controller"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_renders_every_object_and_equals_the_helm_chart_defaults() {
    let env = Env::start().await;
    let rendered = render_kustomize(&env).await;
    let mut want: Vec<(String, String)> = expected_objects()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    want.sort();
    let got: Vec<(String, String)> = rendered.keys().cloned().collect();
    assert_eq!(got, want, "kubectl kustomize renders other objects");
    for ((kind, name), doc) in &rendered {
        let labels = &doc["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/part-of"], "fluxconfig",
            "{kind}/{name} lacks the part-of label"
        );
        let namespaced = !matches!(
            kind.as_str(),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if namespaced {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{kind}/{name}");
        }
    }

    let chart = Chart::load().objects();
    // Helm creates the release namespace itself (`--create-namespace`), so only kustomize has
    // a Namespace object; everything else must be the same object, field by field.
    let mut chart_keys: Vec<(String, String)> = chart.keys().cloned().collect();
    chart_keys.push(("Namespace".into(), NAMESPACE.into()));
    chart_keys.sort();
    assert_eq!(chart_keys, want, "the Helm chart renders other objects");
    for (k, helm) in &chart {
        let kustomize = strip_kustomize_additions(rendered[k].clone());
        assert_eq!(
            &kustomize,
            helm,
            "{k:?} differs between kustomize (left) and the Helm chart (right):\n{}\n{}",
            serde_json::to_string_pretty(&kustomize).unwrap(),
            serde_json::to_string_pretty(helm).unwrap()
        );
    }
}

#[test]
fn chart_renderer_takes_the_non_default_branches() {
    // The equality test above only sees the defaults; this one makes sure the renderer really
    // evaluates the chart's conditionals, so that test could fail.
    let mut chart = Chart::load();
    chart.values["dataplaneUrl"] = json!("https://dp.example.com");
    chart.values["proxy"]["proxyCert"] = json!("-----BEGIN CERTIFICATE-----");
    chart.values["metrics"]["serviceMonitor"]["enabled"] = json!(true);
    let objects = chart.objects();
    let config = &objects[&(
        "ConfigMap".to_string(),
        "fluxconfig-agent-config".to_string(),
    )];
    assert_eq!(
        config["data"]["FLUXCONFIG_AGENT_DATAPLANE_URL"],
        "https://dp.example.com"
    );
    assert!(config["data"].get("FLUXCONFIG_AGENT_REGION").is_none());
    assert_eq!(
        config["data"]["FLUXCONFIG_AGENT_PROXY_CA_FILE"],
        "/etc/fluxconfig/proxy/ca.crt"
    );
    assert!(objects.contains_key(&("ConfigMap".to_string(), "fluxconfig-proxy-ca".to_string())));
    assert!(objects.contains_key(&("ServiceMonitor".to_string(), "fluxconfig".to_string())));
    let agent = &objects[&("Deployment".to_string(), "fluxconfig-agent".to_string())];
    let mounts = &agent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(mounts[1]["mountPath"], "/etc/fluxconfig/proxy");
    assert_eq!(
        agent["spec"]["template"]["spec"]["volumes"][1]["configMap"]["name"],
        "fluxconfig-proxy-ca"
    );
}

async fn get_json(env: &Env, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    env.kubectl(&full).await.json()
}

/// resourceVersion of every installed object, by kind/name.
async fn resource_versions(env: &Env) -> BTreeMap<String, String> {
    let mut rvs = BTreeMap::new();
    for (kind, name) in expected_objects() {
        let mut args = vec![kind, name];
        let namespaced = !matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if namespaced {
            args.extend(["-n", NAMESPACE]);
        }
        let obj = get_json(env, &args).await;
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion")
            .to_string();
        rvs.insert(format!("{kind}/{name}"), rv);
    }
    rvs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_applies_server_side_to_the_emulator_and_reapplies_as_a_no_op() {
    let env = Env::start().await;
    let dir = kustomize_dir();
    let out = kubectl_ok(&env, &["apply", "--server-side", "-k", &dir]).await;
    for (kind, name) in expected_objects() {
        // kubectl prints `<kind>[.<group>]/<name> serverside-applied`.
        let kind = kind.to_lowercase();
        let applied = out.lines().any(|l| {
            let (resource, rest) = l.split_once('/').unwrap_or_default();
            (resource == kind || resource.starts_with(&format!("{kind}.")))
                && rest == format!("{name} serverside-applied")
        });
        assert!(applied, "apply output lacks {kind}/{name}:\n{out}");
    }
    kubectl_ok(
        &env,
        &[
            "wait",
            "--for=condition=Established",
            "crd/fluxconfigs.clusterconfig.azure.com",
            "--timeout=20s",
        ],
    )
    .await;

    let controller = get_json(
        &env,
        &["deployment", "fluxconfig-controller", "-n", NAMESPACE],
    )
    .await;
    assert_eq!(controller["spec"]["replicas"], 2);
    let pod = &controller["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "8080");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "fluxconfig-controller");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["args"],
        json!([
            "run",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--log-level",
            "info"
        ])
    );
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env_names: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["POD_NAME", "POD_NAMESPACE"]);

    let agent = get_json(&env, &["deployment", "fluxconfig-agent", "-n", NAMESPACE]).await;
    assert_eq!(agent["spec"]["replicas"], 1);
    let pod = &agent["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "8081");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        c["envFrom"],
        json!([{"configMapRef": {"name": "fluxconfig-agent-config"}}])
    );
    let token_mount = &c["volumeMounts"][0];
    let config = get_json(
        &env,
        &["configmap", "fluxconfig-agent-config", "-n", NAMESPACE],
    )
    .await;
    let token_file = config["data"]["FLUXCONFIG_AGENT_TOKEN_FILE"]
        .as_str()
        .expect("token file");
    // The agent reads its token where the projected volume puts it.
    assert_eq!(
        format!(
            "{}/{}",
            token_mount["mountPath"].as_str().unwrap(),
            pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["path"]
                .as_str()
                .unwrap()
        ),
        token_file
    );
    assert_eq!(config["data"]["FLUXCONFIG_AGENT_REGION"], "westeurope");

    for (kind, name) in [
        ("serviceaccount", "fluxconfig-agent"),
        ("serviceaccount", "fluxconfig-controller"),
    ] {
        get_json(&env, &[kind, name, "-n", NAMESPACE]).await;
    }
    let role = get_json(&env, &["clusterrole", "fluxconfig-controller"]).await;
    let rules = role["rules"].as_array().expect("rules");
    assert!(rules
        .iter()
        .any(|r| r["resources"] == json!(["clusterroles"])
            && r["resourceNames"] == json!(["cluster-admin"])
            && r["verbs"] == json!(["bind"])));
    let binding = get_json(&env, &["clusterrolebinding", "fluxconfig-agent"]).await;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "fluxconfig-agent", "namespace": NAMESPACE}])
    );
    let crd = get_json(&env, &["crd", "fluxconfigs.clusterconfig.azure.com"]).await;
    assert_eq!(crd["spec"]["names"]["kind"], "FluxConfig");
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "fluxconfig"
    );

    let before = resource_versions(&env).await;
    let again = kubectl_ok(&env, &["apply", "--server-side", "-k", &dir]).await;
    assert_eq!(
        again.lines().count(),
        expected_objects().len(),
        "re-apply output:\n{again}"
    );
    let after = resource_versions(&env).await;
    assert_eq!(
        before, after,
        "re-applying the same manifests wrote objects"
    );
}
