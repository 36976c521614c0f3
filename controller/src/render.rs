//! `fluxconfig-controller render`: the Flux objects a FluxConfig manifest becomes, as a YAML
//! stream, without a cluster (like `flux create ... --export`).

use std::collections::BTreeMap;

use base64::Engine;
use fluxconfig_api::protected::ProtectedSettings;
use fluxconfig_api::validation::{self, ValidationErrors};
use fluxconfig_api::FluxConfig;
use kube::api::ObjectMeta;
use serde_json::Value;

use crate::translate::{translate, TranslateError};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("reading YAML: {0}")]
    Yaml(String),
    #[error("document {index}: {message}")]
    Document { index: usize, message: String },
    #[error(
        "no FluxConfig (apiVersion clusterconfig.azure.com/v1beta1, kind FluxConfig) in the input"
    )]
    NoFluxConfig,
    #[error("FluxConfig {namespace}/{name}: {source}")]
    Config {
        namespace: String,
        name: String,
        source: TranslateError,
    },
    #[error("writing YAML: {0}")]
    Output(String),
}

/// Renders every FluxConfig in a YAML stream. Secrets in the same stream supply the protected
/// settings a FluxConfig's `protectedSettingsSecretRef` names.
pub fn render(input: &str) -> Result<String, RenderError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| RenderError::Yaml(e.to_string()))?;
    let docs: Vec<(usize, Value)> = docs
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !d.is_null())
        .collect();

    let mut secrets: BTreeMap<(String, String), ProtectedSettings> = BTreeMap::new();
    for (index, doc) in &docs {
        if doc.get("kind").and_then(Value::as_str) == Some("Secret") {
            let (namespace, name, settings) = read_secret(*index, doc)?;
            secrets.insert((namespace, name), settings);
        }
    }

    let mut out = String::new();
    let mut found = false;
    for (index, doc) in &docs {
        if doc.get("kind").and_then(Value::as_str) != Some("FluxConfig") {
            continue;
        }
        found = true;
        let config = read_fluxconfig(*index, doc)?;
        let name = config.metadata.name.clone().unwrap_or_default();
        let namespace = config.metadata.namespace.clone().unwrap_or_default();
        let fail = |source: TranslateError| RenderError::Config {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        };
        let protected = match &config.spec.protected_settings_secret_ref {
            None => ProtectedSettings::new(),
            Some(secret) => secrets
                .get(&(namespace.clone(), secret.clone()))
                .cloned()
                .ok_or_else(|| {
                    fail(TranslateError::Invalid(ValidationErrors(vec![
                        validation::FieldError {
                            field: "spec.protectedSettingsSecretRef".to_string(),
                            message: format!(
                                "Secret {namespace}/{secret} is not in the input; add it to the stream"
                            ),
                        },
                    ])))
                })?,
        };
        let objects = translate(&config, &protected).map_err(fail)?;
        let values = objects
            .to_values()
            .map_err(|e| RenderError::Output(e.to_string()))?;
        for v in values {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(&v).map_err(|e| RenderError::Output(e.to_string()))?,
            );
        }
    }
    if !found {
        return Err(RenderError::NoFluxConfig);
    }
    Ok(out)
}

fn read_fluxconfig(index: usize, doc: &Value) -> Result<FluxConfig, RenderError> {
    let doc_err = |message: String| RenderError::Document { index, message };
    let api_version = doc.get("apiVersion").and_then(Value::as_str);
    let expected = format!(
        "{}/{}",
        fluxconfig_api::fluxconfig::GROUP,
        fluxconfig_api::fluxconfig::VERSION
    );
    if api_version != Some(expected.as_str()) {
        return Err(doc_err(format!(
            "apiVersion: FluxConfig must be {expected}, got {}",
            api_version.unwrap_or("nothing")
        )));
    }
    let mut metadata: ObjectMeta =
        serde_json::from_value(doc.get("metadata").cloned().unwrap_or(Value::Null))
            .map_err(|e| doc_err(format!("metadata: {e}")))?;
    let spec_value = doc.get("spec").cloned().unwrap_or(Value::Null);
    let spec = validation::parse_spec(&spec_value).map_err(|e| RenderError::Config {
        namespace: metadata.namespace.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
        source: TranslateError::Invalid(e),
    })?;
    // Like `kubectl apply`, a manifest without a namespace lands in the spec's (or `default`).
    if metadata.namespace.is_none() {
        metadata.namespace = Some(spec.namespace.clone().unwrap_or_else(|| "default".into()));
    }
    Ok(FluxConfig {
        metadata,
        spec,
        status: None,
    })
}

fn read_secret(
    index: usize,
    doc: &Value,
) -> Result<(String, String, ProtectedSettings), RenderError> {
    let doc_err = |message: String| RenderError::Document { index, message };
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| doc_err("metadata.name: required".to_string()))?;
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut settings = ProtectedSettings::new();
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let raw = v
                .as_str()
                .ok_or_else(|| doc_err(format!("data.{k}: must be a base64 string")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| doc_err(format!("data.{k}: not valid base64")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| doc_err(format!("data.{k}: not UTF-8 text")))?;
            settings.insert(k.clone(), text);
        }
    }
    // As the API server does, stringData wins over data for the same key.
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let text = v
                .as_str()
                .ok_or_else(|| doc_err(format!("stringData.{k}: must be a string")))?;
            settings.insert(k.clone(), text.to_string());
        }
    }
    Ok((namespace.to_string(), name.to_string(), settings))
}
