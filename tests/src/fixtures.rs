//! Git repositories for tests, made with the real `git` CLI and fixed identities and dates so
//! that commit ids are the same on every machine.
//!
//! [`tutorial_repo`] is shaped like Azure's `gitops-flux2-kustomize-helm-mt`, the repository of
//! Azure's GitOps tutorial: `infrastructure/` (HelmRepositories, the nginx and redis namespaces
//! and HelmReleases) and `apps/staging` (podinfo through `../base/podinfo`), on branch `main`.
//! Unlike the original, the objects carry no `metadata.namespace`, so they land in the
//! namespace of whichever configuration applies them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fluxsim::git::{command, output, GitError};

/// The tutorial repository's public URL; map it to [`TutorialRepo::path`] with
/// `SimConfig::git_url_map`.
pub const TUTORIAL_URL: &str = "https://github.com/Azure/gitops-flux2-kustomize-helm-mt";

/// Author and committer date of every fixture commit (fixed so commit ids are stable).
const DATE: &str = "2021-06-01T12:00:00+0000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] GitError),
}

#[derive(Clone, Debug)]
pub struct TutorialRepo {
    pub path: PathBuf,
    /// The commit `main` points at (40 hex digits).
    pub commit: String,
    pub url: String,
    pub branch: String,
}

impl TutorialRepo {
    /// The `git_url_map` entry that serves this repository under the tutorial's URL.
    pub fn url_map(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([(self.url.clone(), self.path.clone())])
    }

    /// Flux's revision for `main` at [`TutorialRepo::commit`].
    pub fn revision(&self) -> String {
        format!("{}@sha1:{}", self.branch, self.commit)
    }
}

const FILES: &[(&str, &str)] = &[
    (
        "README.md",
        "# gitops-flux2-kustomize-helm-mt (test fixture)\n\nInfrastructure and apps for a multi-tenant GitOps tutorial.\n",
    ),
    (
        "infrastructure/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - sources\n  - nginx\n  - redis\n",
    ),
    (
        "infrastructure/sources/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - bitnami.yaml\n  - ingress-nginx.yaml\n",
    ),
    (
        "infrastructure/sources/bitnami.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: bitnami\nspec:\n  interval: 30m\n  url: https://charts.bitnami.com/bitnami\n",
    ),
    (
        "infrastructure/sources/ingress-nginx.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: ingress-nginx\nspec:\n  interval: 30m\n  url: https://kubernetes.github.io/ingress-nginx\n",
    ),
    (
        "infrastructure/nginx/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - namespace.yaml\n  - release.yaml\n",
    ),
    (
        "infrastructure/nginx/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: nginx\n",
    ),
    (
        "infrastructure/nginx/release.yaml",
        r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: nginx
spec:
  targetNamespace: nginx
  releaseName: ingress-nginx
  chart:
    spec:
      chart: ingress-nginx
      version: "4.10.1"
      sourceRef:
        kind: HelmRepository
        name: ingress-nginx
  interval: 1h0m0s
  install:
    remediation:
      retries: 3
  values:
    controller:
      service:
        type: NodePort
"#,
    ),
    (
        "infrastructure/redis/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - namespace.yaml\n  - release.yaml\n",
    ),
    (
        "infrastructure/redis/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: redis\n",
    ),
    (
        "infrastructure/redis/release.yaml",
        r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: redis
spec:
  targetNamespace: redis
  releaseName: redis
  chart:
    spec:
      chart: redis
      version: "17.15.2"
      sourceRef:
        kind: HelmRepository
        name: bitnami
  interval: 1h0m0s
  install:
    remediation:
      retries: 3
  values:
    architecture: standalone
    auth:
      enabled: false
"#,
    ),
    (
        "apps/base/podinfo/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - namespace.yaml\n  - repository.yaml\n  - release.yaml\n",
    ),
    (
        "apps/base/podinfo/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: podinfo\n",
    ),
    (
        "apps/base/podinfo/repository.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: podinfo\nspec:\n  interval: 5m\n  url: https://stefanprodan.github.io/podinfo\n",
    ),
    (
        "apps/base/podinfo/release.yaml",
        r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  targetNamespace: podinfo
  releaseName: podinfo
  chart:
    spec:
      chart: podinfo
      version: "6.5.4"
      sourceRef:
        kind: HelmRepository
        name: podinfo
  interval: 5m
  install:
    remediation:
      retries: 3
  values:
    cache: redis-master.redis:6379
    ingress:
      enabled: true
      className: nginx
"#,
    ),
    (
        "apps/staging/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/podinfo\n",
    ),
];

fn git(repo: &Path, args: &[&str]) -> Result<String, Error> {
    let mut cmd = command(Some(repo));
    cmd.args(args)
        .env("GIT_AUTHOR_NAME", "Fluxconfig Testbed")
        .env("GIT_AUTHOR_EMAIL", "testbed@fluxconfig.invalid")
        .env("GIT_COMMITTER_NAME", "Fluxconfig Testbed")
        .env("GIT_COMMITTER_EMAIL", "testbed@fluxconfig.invalid")
        .env("GIT_AUTHOR_DATE", DATE)
        .env("GIT_COMMITTER_DATE", DATE);
    Ok(output(cmd)?.trim().to_string())
}

fn write(repo: &Path, file: &str, content: &str) -> Result<(), Error> {
    let path = repo.join(file);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, content).map_err(io)
}

/// Creates the tutorial repository in `dir` (which may exist, empty) with one commit on `main`.
pub fn tutorial_repo(dir: &Path) -> Result<TutorialRepo, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    git(dir, &["-c", "init.defaultBranch=main", "init", "-q"])?;
    // Whatever the default branch setting, the fixture's branch is `main`.
    git(dir, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
    for (file, content) in FILES {
        write(dir, file, content)?;
    }
    git(dir, &["add", "-A"])?;
    git(
        dir,
        &[
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "Tutorial infrastructure and apps",
        ],
    )?;
    let commit = git(dir, &["rev-parse", "HEAD"])?;
    Ok(TutorialRepo {
        path: dir.to_path_buf(),
        commit,
        url: TUTORIAL_URL.to_string(),
        branch: "main".to_string(),
    })
}

/// Writes `file` (relative to the repository) and commits it on the current branch; returns
/// the new commit. An empty `content` deletes the file.
pub fn commit_change(repo: &Path, file: &str, content: &str) -> Result<String, Error> {
    if content.is_empty() {
        git(repo, &["rm", "-q", "--ignore-unmatch", "--", file])?;
    } else {
        write(repo, file, content)?;
        git(repo, &["add", "--", file])?;
    }
    let message = format!("Update {file}");
    git(
        repo,
        &[
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            &message,
        ],
    )?;
    git(repo, &["rev-parse", "HEAD"])
}

/// Tags the current commit (annotated, like release tags usually are).
pub fn tag(repo: &Path, name: &str) -> Result<(), Error> {
    git(
        repo,
        &["-c", "tag.gpgsign=false", "tag", "-a", "-m", name, name],
    )?;
    Ok(())
}
