//! kustomize-controller's build, reduced to what GitOps repositories like Azure's tutorial use:
//! `kustomization.yaml` `resources:` (files and directories, recursively) and `namespace:`, or,
//! without a kustomization.yaml, every manifest below the path (what Flux generates then);
//! followed by post-build `${var}` substitution.

use std::collections::BTreeMap;

use serde_json::Value;

use super::git::{GitError, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `spec.path` does not exist in the artifact (Flux: `ArtifactFailed`).
    #[error("kustomization path not found: {0}")]
    PathNotFound(String),
    /// Anything wrong with the content (Flux: `BuildFailed`).
    #[error("{0}")]
    Build(String),
    #[error(transparent)]
    Git(#[from] GitError),
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Kinds kustomize never puts in a namespace (its built-in list, trimmed to common ones).
const CLUSTER_SCOPED: [&str; 11] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "IngressClass",
];

/// Repository-relative path without `./`, `..` resolved, no trailing slash ("" = root).
pub fn normalise(path: &str) -> Result<String, BuildError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(BuildError::Build(format!(
                        "path '{path}' leaves the repository"
                    )));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn join(dir: &str, rel: &str) -> Result<String, BuildError> {
    if dir.is_empty() {
        normalise(rel)
    } else {
        normalise(&format!("{dir}/{rel}"))
    }
}

pub struct Builder<'a> {
    snapshot: &'a Snapshot,
    substitute: &'a BTreeMap<String, String>,
}

impl<'a> Builder<'a> {
    pub fn new(snapshot: &'a Snapshot, substitute: &'a BTreeMap<String, String>) -> Self {
        Builder {
            snapshot,
            substitute,
        }
    }

    /// The objects `spec.path` renders to, in kustomize's resource order.
    pub fn build(&self, path: &str) -> Result<Vec<Value>, BuildError> {
        let root = normalise(path)?;
        if !root.is_empty() && !self.snapshot.is_dir(&root) {
            return Err(BuildError::PathNotFound(path.to_string()));
        }
        let mut out = Vec::new();
        self.dir(&root, &mut out, 0)?;
        Ok(out)
    }

    fn kustomization_file(&self, dir: &str) -> Option<String> {
        KUSTOMIZATION_FILES
            .iter()
            .map(|f| {
                if dir.is_empty() {
                    f.to_string()
                } else {
                    format!("{dir}/{f}")
                }
            })
            .find(|p| self.snapshot.is_file(p))
    }

    fn dir(&self, dir: &str, out: &mut Vec<Value>, depth: usize) -> Result<(), BuildError> {
        if depth > 32 {
            return Err(BuildError::Build(format!(
                "kustomization resources nest too deep at '{dir}' (a cycle?)"
            )));
        }
        match self.kustomization_file(dir) {
            Some(file) => self.kustomization(dir, &file, out, depth),
            None => self.generated(dir, out, depth),
        }
    }

    /// What Flux generates for a directory without kustomization.yaml: every manifest file,
    /// recursing into subdirectories, a subdirectory with its own kustomization.yaml taken whole.
    fn generated(&self, dir: &str, out: &mut Vec<Value>, depth: usize) -> Result<(), BuildError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut subdirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for file in self.snapshot.files() {
            let Some(rest) = file.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((sub, _)) => {
                    let sub = format!("{prefix}{sub}");
                    // Hidden directories (.git, .github...) hold no manifests.
                    if !sub.rsplit('/').any(|p| p.starts_with('.')) {
                        subdirs.insert(sub);
                    }
                }
                None if rest.ends_with(".yaml") || rest.ends_with(".yml") => {
                    // Only files that hold Kubernetes objects: values files and the like are
                    // not resources.
                    for obj in self.file(file)? {
                        if obj.get("apiVersion").is_some() && obj.get("kind").is_some() {
                            out.push(obj);
                        }
                    }
                }
                None => {}
            }
        }
        for sub in subdirs {
            self.dir(&sub, out, depth + 1)?;
        }
        Ok(())
    }

    fn kustomization(
        &self,
        dir: &str,
        file: &str,
        out: &mut Vec<Value>,
        depth: usize,
    ) -> Result<(), BuildError> {
        let text = self.snapshot.read(file)?;
        let k: Value =
            serde_saphyr::from_str(&text).map_err(|e| BuildError::Build(format!("{file}: {e}")))?;
        let mut mine = Vec::new();
        let resources = k["resources"].as_array().cloned().unwrap_or_default();
        for r in resources {
            let Some(r) = r.as_str() else {
                return Err(BuildError::Build(format!(
                    "{file}: resources must be strings"
                )));
            };
            if r.contains("://") {
                return Err(BuildError::Build(format!(
                    "{file}: remote resource '{r}' is not supported by the simulator"
                )));
            }
            let path = join(dir, r)?;
            if self.snapshot.is_file(&path) {
                mine.extend(self.file(&path)?);
            } else if self.snapshot.is_dir(&path) {
                self.dir(&path, &mut mine, depth + 1)?;
            } else {
                return Err(BuildError::Build(format!(
                    "accumulating resources: '{path}' (from {file}): no such file or directory"
                )));
            }
        }
        if let Some(ns) = k["namespace"].as_str().filter(|s| !s.is_empty()) {
            for obj in &mut mine {
                let kind = obj["kind"].as_str().unwrap_or_default();
                if !CLUSTER_SCOPED.contains(&kind) {
                    obj["metadata"]["namespace"] = Value::String(ns.to_string());
                }
            }
        }
        out.extend(mine);
        Ok(())
    }

    fn file(&self, path: &str) -> Result<Vec<Value>, BuildError> {
        let text = substitute(&self.snapshot.read(path)?, self.substitute);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| BuildError::Build(format!("{path}: {e}")))?;
        let mut objects = Vec::new();
        for doc in docs {
            match doc {
                Value::Null => {}
                Value::Object(_) if doc.get("kind").and_then(Value::as_str) == Some("List") => {
                    objects.extend(doc["items"].as_array().cloned().unwrap_or_default());
                }
                Value::Object(_) => objects.push(doc),
                _ => {
                    return Err(BuildError::Build(format!(
                        "{path}: a document is not a Kubernetes object"
                    )))
                }
            }
        }
        Ok(objects)
    }
}

/// Flux's post-build substitution: `${var}`, `${var:=default}`; `$${var}` stays literal as
/// `${var}`; an unset variable without a default becomes empty.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    if vars.is_empty() || !text.contains("${") {
        return text.to_string();
    }
    let Ok(re) = regex::Regex::new(r"(\$?)\$\{([_A-Za-z][_A-Za-z0-9]*)(?::=([^}]*))?\}") else {
        return text.to_string();
    };
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let literal = &c[0];
        if !c[1].is_empty() {
            return literal[1..].to_string();
        }
        match vars.get(&c[2]) {
            Some(v) => v.clone(),
            None => c.get(3).map(|d| d.as_str().to_string()).unwrap_or_default(),
        }
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_like_flux() {
        let mut vars = BTreeMap::new();
        vars.insert("cluster_env".to_string(), "prod".to_string());
        assert_eq!(
            substitute(
                "env: ${cluster_env} x: ${missing:=dflt} y: $${cluster_env}",
                &vars
            ),
            "env: prod x: dflt y: ${cluster_env}"
        );
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise("./apps/staging/").unwrap(), "apps/staging");
        assert_eq!(
            normalise("apps/staging/../base/podinfo").unwrap(),
            "apps/base/podinfo"
        );
        assert_eq!(normalise("./").unwrap(), "");
        assert!(normalise("../x").is_err());
    }
}
