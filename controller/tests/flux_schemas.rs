//! Every object translation produces must be accepted by the real Flux CRD schemas
//! (`shared/reference/flux-crds/`, openAPIV3Schema of the served storage version), checked
//! strictly: a field the schema does not know fails here instead of being silently pruned by
//! the API server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fluxconfig_api::protected::ProtectedSettings;
use fluxconfig_api::FluxConfig;
use fluxconfig_controller::translate::translate;
use serde_json::{json, Value};

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/flux-crds")
}

/// kind → (apiVersion, JSON Schema converted from the CRD's openAPIV3Schema).
fn flux_schemas() -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(crd_dir()).expect("flux CRDs beside the repository") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read CRD");
        let crd: Value = serde_saphyr::from_str(&text).expect("CRD YAML");
        let group = crd["spec"]["group"].as_str().expect("group").to_string();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        let version = crd["spec"]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .find(|v| v["served"] == json!(true) && v["storage"] == json!(true))
            .expect("served storage version");
        let schema = to_json_schema(&version["schema"]["openAPIV3Schema"]);
        let api_version = format!("{group}/{}", version["name"].as_str().expect("name"));
        out.insert(kind, (api_version, schema));
    }
    out
}

/// Structural OpenAPI v3 → JSON Schema with the API server's strict-field-validation semantics.
fn to_json_schema(s: &Value) -> Value {
    let Some(obj) = s.as_object() else {
        return s.clone();
    };
    let mut out = serde_json::Map::new();
    let nullable = obj.get("nullable") == Some(&json!(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    for (k, v) in obj {
        match k.as_str() {
            "properties" => {
                let props = v
                    .as_object()
                    .expect("properties")
                    .iter()
                    .map(|(name, p)| (name.clone(), to_json_schema(p)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(k.clone(), to_json_schema(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = v.as_array().expect("list").iter().map(to_json_schema);
                out.insert(k.clone(), Value::Array(list.collect()));
            }
            // Formats such as int64 are OpenAPI annotations, not JSON Schema checks; CEL rules
            // (x-kubernetes-validations) are not evaluated here.
            "format" | "nullable" | "description" | "x-kubernetes-validations" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if obj.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        out.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    if obj.contains_key("properties") && !preserve && !obj.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(out)
}

fn config(spec: Value) -> FluxConfig {
    serde_json::from_value(json!({
        "apiVersion": "clusterconfig.azure.com/v1beta1",
        "kind": "FluxConfig",
        "metadata": {"name": "cfg", "namespace": "team-a", "uid": "6a3c1f5e-2b8d-4e0f-9a7c-1d2e3f4a5b6c"},
        "spec": spec,
    }))
    .expect("FluxConfig fixture")
}

fn settings(pairs: &[(&str, &str)]) -> ProtectedSettings {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDZc2F0aXNmaWVkIHdpdGggdGhlIHRlc3Qgb25seSBrZXkgbWF0ZXJp\n-----END OPENSSH PRIVATE KEY-----\n";

/// A table of configurations covering each source kind and option.
fn cases() -> Vec<(&'static str, FluxConfig, ProtectedSettings)> {
    let ks_all_options = json!({
        "infra": {"path": "./infrastructure", "prune": true, "force": true, "wait": false,
                  "timeoutInSeconds": 300, "syncIntervalInSeconds": 120, "retryIntervalInSeconds": 30,
                  "postBuild": {"substitute": {"cluster_env": "prod", "REGION": "westeurope"},
                                "substituteFrom": [{"kind": "ConfigMap", "name": "vars"},
                                                   {"kind": "Secret", "name": "secret-vars", "optional": true}]}},
        "apps": {"path": "./apps/staging", "prune": true, "dependsOn": ["infra"]}
    });
    vec![
        (
            "tutorial git https branch",
            config(json!({
                "scope": "cluster", "namespace": "team-a", "sourceKind": "GitRepository",
                "gitRepository": {"url": "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
                                  "repositoryRef": {"branch": "main"}},
                "kustomizations": {"infra": {"path": "./infrastructure", "prune": true},
                                   "apps": {"path": "./apps/staging", "prune": true, "dependsOn": ["infra"]}}
            })),
            settings(&[]),
        ),
        (
            "git every kustomization option, tag, suspended",
            config(json!({
                "suspend": true,
                "gitRepository": {"url": "https://example.com/org/repo.git", "repositoryRef": {"tag": "v1.2.3"},
                                  "timeoutInSeconds": 3600, "syncIntervalInSeconds": 5400},
                "kustomizations": ks_all_options.clone()
            })),
            settings(&[]),
        ),
        (
            "git semver with https credentials and CA",
            config(json!({
                "gitRepository": {"url": "https://dev.azure.com/org/project/_git/repo",
                                  "repositoryRef": {"semver": ">=1.0.0 <2.0.0"},
                                  "httpsUser": "git", "httpsCACert": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJJVENCeUFJSkFQZmFrZQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="},
                "kustomizations": {"k": {}}
            })),
            settings(&[("httpsKey", "pat-value")]),
        ),
        (
            "git ssh commit with private key and known hosts",
            config(json!({
                "gitRepository": {"url": "ssh://git@github.com/org/repo.git",
                                  "repositoryRef": {"commit": "4f1bdad4f1bdad4f1bdad4f1bdad4f1bdad4f1bd"},
                                  "sshKnownHosts": "Z2l0aHViLmNvbSBzc2gtZWQyNTUxOSBBQUFBQzNOemFDMWxaREkxTlRFNUFBQUFJT01xcW5rVnpybTBTZEc2VU9vcUtMc2FiZ0g1Qzlva1dpMGRoMmw5R0tKbAo="},
                "kustomizations": {"root": {"path": "./"}}
            })),
            settings(&[("sshPrivateKey", SSH_KEY)]),
        ),
        (
            "git azure provider, namespace scope",
            config(json!({
                "scope": "namespace",
                "gitRepository": {"url": "https://dev.azure.com/org/project/_git/repo",
                                  "repositoryRef": {"branch": "release"}, "provider": "Azure"},
                "kustomizations": {"app": {"path": "./app", "prune": true}}
            })),
            settings(&[]),
        ),
        (
            "git local auth ref",
            config(json!({
                "gitRepository": {"url": "https://example.com/org/repo", "repositoryRef": {"branch": "main"},
                                  "localAuthRef": "my-git-auth"},
                "kustomizations": {"k": {"path": "k"}}
            })),
            settings(&[]),
        ),
        (
            "bucket with keys over plain http",
            config(json!({
                "sourceKind": "Bucket",
                "bucket": {"url": "http://minio.minio.svc:9000", "bucketName": "flux-bucket",
                           "insecure": true, "accessKey": "minio", "timeoutInSeconds": 60,
                           "syncIntervalInSeconds": 60},
                "kustomizations": {"k": {"path": "./deploy"}}
            })),
            settings(&[("bucketSecretKey", "minio-secret")]),
        ),
        (
            "bucket with local auth ref over https",
            config(json!({
                "sourceKind": "Bucket",
                "bucket": {"url": "https://s3.amazonaws.com", "bucketName": "my-bucket",
                           "localAuthRef": "bucket-auth"},
                "kustomizations": {"k": {}}
            })),
            settings(&[]),
        ),
        (
            "azure blob with service principal secret",
            config(json!({
                "sourceKind": "AzureBlob",
                "azureBlob": {"url": "https://account.blob.core.windows.net", "containerName": "flux",
                              "servicePrincipal": {"clientId": "00000000-0000-0000-0000-000000000001",
                                                   "tenantId": "00000000-0000-0000-0000-000000000002",
                                                   "clientCertificateSendChain": false}},
                "kustomizations": {"k": {"path": "./k"}}
            })),
            settings(&[("clientSecret", "sp-secret")]),
        ),
        (
            "azure blob with account key",
            config(json!({
                "sourceKind": "AzureBlob",
                "azureBlob": {"url": "https://account.blob.core.windows.net", "containerName": "flux"},
                "kustomizations": {"k": {}}
            })),
            settings(&[("accountKey", "a2V5")]),
        ),
        (
            "azure blob with managed identity",
            config(json!({
                "sourceKind": "AzureBlob",
                "azureBlob": {"url": "https://account.blob.core.windows.net", "containerName": "flux",
                              "managedIdentity": {"clientId": "00000000-0000-0000-0000-000000000003"}},
                "kustomizations": {"k": {}}
            })),
            settings(&[]),
        ),
        (
            "oci with tag, layer selector, cosign keys, TLS, workload identity",
            config(json!({
                "sourceKind": "OCIRepository",
                "ociRepository": {"url": "oci://myregistry.azurecr.io/manifests/app",
                                  "repositoryRef": {"tag": "latest"},
                                  "layerSelector": {"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip", "operation": "extract"},
                                  "verify": {"provider": "cosign",
                                             "matchOidcIdentity": [{"issuer": "^https://token.actions.githubusercontent.com$", "subject": "^https://github.com/org/.*$"}],
                                             "verificationConfig": {"cosign": "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KZmFrZQotLS0tLUVORCBQVUJMSUMgS0VZLS0tLS0K"}},
                                  "useWorkloadIdentity": true, "serviceAccountName": "oci-reader",
                                  "tlsConfig": {"caCertificate": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmZha2UKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="}},
                "kustomizations": {"k": {"path": "./"}}
            })),
            settings(&[("tlsClientCertificate", "cert"), ("tlsPrivateKey", "key")]),
        ),
        (
            "oci with digest, insecure, local auth",
            config(json!({
                "sourceKind": "OCIRepository",
                "ociRepository": {"url": "oci://registry.local:5000/app",
                                  "repositoryRef": {"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                                  "insecure": true, "localAuthRef": "regcred"},
                "kustomizations": {"k": {}}
            })),
            settings(&[]),
        ),
        (
            "oci with semver",
            config(json!({
                "sourceKind": "OCIRepository",
                "ociRepository": {"url": "oci://ghcr.io/org/app", "repositoryRef": {"semver": "1.x"}},
                "kustomizations": {"a": {}, "b": {"dependsOn": ["a"]}}
            })),
            settings(&[]),
        ),
    ]
}

#[test]
fn every_translated_flux_object_matches_the_flux_crd_schema() {
    let schemas = flux_schemas();
    let mut validated = 0;
    for (case, cfg, protected) in cases() {
        let objects = translate(&cfg, &protected).unwrap_or_else(|e| panic!("{case}: {e}"));
        for obj in objects.to_values().expect("serialize") {
            let kind = obj["kind"].as_str().expect("kind");
            let Some((api_version, schema)) = schemas.get(kind) else {
                // Built-in kinds (Secret, ServiceAccount, RoleBinding) are not Flux's.
                assert!(
                    ["Secret", "ServiceAccount", "RoleBinding"].contains(&kind),
                    "{case}: unexpected kind {kind}"
                );
                continue;
            };
            assert_eq!(
                obj["apiVersion"],
                json!(api_version),
                "{case}: {kind} apiVersion"
            );
            let validator = jsonschema::validator_for(schema).expect("schema compiles");
            let errors: Vec<String> = validator
                .iter_errors(&obj)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{case}: {kind} {} rejected by the Flux CRD schema:\n{}\n{}",
                obj["metadata"]["name"],
                errors.join("\n"),
                serde_json::to_string_pretty(&obj).unwrap_or_default()
            );
            validated += 1;
        }
    }
    assert!(validated >= 30, "only {validated} Flux objects validated");
}

#[test]
fn the_strict_schema_check_rejects_what_the_api_server_would_prune() {
    let schemas = flux_schemas();
    let (_, schema) = &schemas["GitRepository"];
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let good = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "x"}, "spec": {"url": "https://h/r", "interval": "1m0s"}});
    assert!(validator.is_valid(&good));
    let mut unknown = good.clone();
    unknown["spec"]["branch"] = json!("main");
    assert!(
        !validator.is_valid(&unknown),
        "unknown field must be rejected"
    );
    let mut bad_timeout = good.clone();
    bad_timeout["spec"]["timeout"] = json!("1h0m0s");
    assert!(
        !validator.is_valid(&bad_timeout),
        "source timeout takes no hours"
    );
    let mut bad_scheme = good;
    bad_scheme["spec"]["url"] = json!("git@github.com:org/repo");
    assert!(
        !validator.is_valid(&bad_scheme),
        "scp-style URL must be rejected"
    );
}
