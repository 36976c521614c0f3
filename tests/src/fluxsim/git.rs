//! source-controller's git side, done with the real `git` CLI: resolving a GitRepository's ref
//! to a revision and reading files at a commit. Blocking; callers run it on the blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha1::Digest as _;

use super::lock;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("running git: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("git {args}: {stderr}")]
    Failed { args: String, stderr: String },
    /// The ref cannot be resolved: what Flux reports as `GitOperationFailed`.
    #[error("{0}")]
    Ref(String),
    #[error("the blocking git task failed: {0}")]
    Join(String),
}

/// A `git` command isolated from the machine's and the user's git configuration, so that CI's
/// or a developer's settings cannot change what the simulator or the fixtures do.
pub(crate) fn command(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

pub(crate) fn output(mut cmd: Command) -> Result<String, GitError> {
    let out = cmd.output()?;
    if !out.status.success() {
        let args = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        return Err(GitError::Failed {
            args,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    let mut cmd = command(dir);
    cmd.args(args);
    output(cmd)
}

/// Where a source URL's content can be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A repository on this machine (mapped URL, plain path or `file://`).
    Local(PathBuf),
    /// A git server we can reach (`git://` from `git daemon`, or http(s) on loopback).
    Remote(String),
    /// Anything else: the simulator makes up a deterministic revision and an empty tree.
    Unreachable,
}

/// What a ref resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub revision: String,
    /// The commit, when the content can be read (not for synthetic revisions).
    pub commit: Option<String>,
}

pub struct Git {
    map: BTreeMap<String, PathBuf>,
    cache: PathBuf,
    /// Fetches into the mirrors are serialised: concurrent ones would trip over git's locks.
    fetch_lock: Mutex<()>,
    /// Trees already listed, by repository and commit. A commit never changes, so these never
    /// go stale; without them every Kustomization reconcile cost git processes, a quarter of
    /// the machine's CPU in `testbed bench` at thousands of configurations on one repository.
    trees: Mutex<HashMap<(PathBuf, String), Arc<Tree>>>,
}

/// Trees kept at most; past this the cache starts over (tests and benches use a handful).
const TREES_KEPT: usize = 256;

/// The repository a URL names, whatever the transport: `https://github.com/A/r`,
/// `ssh://git@github.com/A/r.git` and `git@github.com:A/r` all become `github.com/a/r`, so one
/// map entry serves a configuration however it authenticates.
fn normalise_url(url: &str) -> String {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        // scp-like `user@host:path`
        None => url.replacen(':', "/", 1),
    };
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{host}/{path}")
        }
        None => rest.rsplit('@').next().unwrap_or(&rest).to_string(),
    };
    let rest = rest.trim_end_matches('/');
    rest.strip_suffix(".git")
        .unwrap_or(rest)
        .to_ascii_lowercase()
}

fn sha1_hex(data: &str) -> String {
    hex::encode(sha1::Sha1::digest(data.as_bytes()))
}

impl Git {
    pub fn new(map: BTreeMap<String, PathBuf>, cache: PathBuf) -> Self {
        let map = map
            .into_iter()
            .map(|(url, path)| (normalise_url(&url), path))
            .collect();
        Git {
            map,
            cache,
            fetch_lock: Mutex::new(()),
            trees: Mutex::new(HashMap::new()),
        }
    }

    pub fn locate(&self, url: &str) -> Location {
        if let Some(target) = self.map.get(&normalise_url(url)) {
            // A map target may itself be a URL (e.g. a `git daemon` on loopback).
            let text = target.to_string_lossy();
            if text.contains("://") {
                return Git::new(BTreeMap::new(), self.cache.clone()).locate(&text);
            }
            return Location::Local(target.clone());
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Location::Local(PathBuf::from(path));
        }
        if url.starts_with('/') {
            return Location::Local(PathBuf::from(url));
        }
        if url.starts_with("git://") {
            return Location::Remote(url.to_string());
        }
        let loopback = ["http://", "https://"].iter().any(|scheme| {
            url.strip_prefix(scheme)
                .is_some_and(|rest| rest.starts_with("127.0.0.1") || rest.starts_with("localhost"))
        });
        if loopback {
            Location::Remote(url.to_string())
        } else {
            Location::Unreachable
        }
    }

    /// A directory holding the URL's refs and objects: the repository itself when local, a
    /// freshly fetched mirror when remote.
    fn repo_dir(&self, location: &Location) -> Result<Option<PathBuf>, GitError> {
        match location {
            Location::Local(path) => Ok(Some(path.clone())),
            Location::Remote(url) => self.fetch(url).map(Some),
            Location::Unreachable => Ok(None),
        }
    }

    fn mirror_path(&self, remote: &str) -> PathBuf {
        self.cache.join(format!("{}.git", &sha1_hex(remote)[..16]))
    }

    fn fetch(&self, url: &str) -> Result<PathBuf, GitError> {
        let mirror = self.mirror_path(url);
        let _guard = lock(&self.fetch_lock);
        if !mirror.join("HEAD").exists() {
            std::fs::create_dir_all(&mirror)?;
            git(Some(&mirror), &["init", "--bare", "-q"])?;
        }
        git(
            Some(&mirror),
            &[
                "fetch",
                "-q",
                "--prune",
                "--force",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )
        .map_err(|e| GitError::Ref(format!("unable to clone '{url}': {e}")))?;
        Ok(mirror)
    }

    /// Resolves `spec.ref` of a GitRepository the way source-controller does (commit, then
    /// name, semver, tag, branch; `master` when no ref is given).
    pub fn resolve(&self, url: &str, reference: &Value) -> Result<Resolved, GitError> {
        let location = self.locate(url);
        let Some(dir) = self.repo_dir(&location)? else {
            return Ok(synthetic(url, reference));
        };
        let refs = list_refs(&dir, url)?;
        let field = |f: &str| reference[f].as_str().filter(|s| !s.is_empty());
        let fail = |what: String| {
            GitError::Ref(format!(
                "failed to checkout and determine revision: unable to clone '{url}': {what}"
            ))
        };

        if let Some(commit) = field("commit") {
            let exists = git(
                Some(&dir),
                &["cat-file", "-e", &format!("{commit}^{{commit}}")],
            );
            let full = exists
                .and_then(|_| git(Some(&dir), &["rev-parse", &format!("{commit}^{{commit}}")]))
                .map_err(|_| fail(format!("unable to resolve commit object for '{commit}'")))?;
            let full = full.trim().to_string();
            let revision = match field("branch") {
                Some(branch) => format!("{branch}@sha1:{full}"),
                None => format!("sha1:{full}"),
            };
            return Ok(Resolved {
                revision,
                commit: Some(full),
            });
        }
        if let Some(name) = field("name") {
            let sha = peeled(&refs, name)
                .ok_or_else(|| fail(format!("couldn't find remote ref \"{name}\"")))?;
            return Ok(found(name, sha));
        }
        if let Some(constraint) = field("semver") {
            let (tag, sha) = highest_matching_tag(&refs, constraint).ok_or_else(|| {
                GitError::Ref(format!(
                    "failed to checkout and determine revision: no match found for semver: {constraint}"
                ))
            })?;
            return Ok(found(&tag, sha));
        }
        if let Some(tag) = field("tag") {
            let sha = peeled(&refs, &format!("refs/tags/{tag}"))
                .ok_or_else(|| fail(format!("couldn't find remote ref \"refs/tags/{tag}\"")))?;
            return Ok(found(tag, sha));
        }
        let branch = field("branch").unwrap_or("master");
        let sha = peeled(&refs, &format!("refs/heads/{branch}"))
            .ok_or_else(|| fail(format!("couldn't find remote ref \"refs/heads/{branch}\"")))?;
        Ok(found(branch, sha))
    }

    /// The files of `commit`, when the URL's content can be read.
    pub fn snapshot(&self, url: &str, commit: &str) -> Result<Option<Snapshot>, GitError> {
        let location = self.locate(url);
        let dir = match &location {
            Location::Local(path) => path.clone(),
            // Resolving fetched the mirror already; reuse it unless it lacks the commit.
            Location::Remote(remote) => {
                let mirror = self.mirror_path(remote);
                let has = mirror.join("HEAD").exists()
                    && git(
                        Some(&mirror),
                        &["cat-file", "-e", &format!("{commit}^{{commit}}")],
                    )
                    .is_ok();
                if has {
                    mirror
                } else {
                    match self.repo_dir(&location)? {
                        Some(dir) => dir,
                        None => return Ok(None),
                    }
                }
            }
            Location::Unreachable => return Ok(None),
        };
        let key = (dir, commit.to_string());
        if let Some(tree) = lock(&self.trees).get(&key) {
            return Ok(Some(Snapshot { tree: tree.clone() }));
        }
        let listing = git(
            Some(&key.0),
            &["ls-tree", "-r", "-z", "--name-only", commit],
        )?;
        let files = listing
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let tree = Arc::new(Tree {
            repo: key.0.clone(),
            commit: key.1.clone(),
            files,
            blobs: Mutex::new(HashMap::new()),
        });
        let mut trees = lock(&self.trees);
        if trees.len() >= TREES_KEPT {
            trees.clear();
        }
        trees.insert(key, tree.clone());
        Ok(Some(Snapshot { tree }))
    }
}

fn found(name: &str, sha: String) -> Resolved {
    Resolved {
        revision: format!("{name}@sha1:{sha}"),
        commit: Some(sha),
    }
}

/// For URLs the simulator cannot reach: stable per URL and ref, shaped like Flux's.
fn synthetic(url: &str, reference: &Value) -> Resolved {
    let field = |f: &str| reference[f].as_str().filter(|s| !s.is_empty());
    let ref_text = serde_json::to_string(reference).unwrap_or_default();
    let hash = sha1_hex(&format!("{url}#{ref_text}"));
    let revision = if let Some(commit) = field("commit") {
        match field("branch") {
            Some(branch) => format!("{branch}@sha1:{commit}"),
            None => format!("sha1:{commit}"),
        }
    } else if let Some(name) = field("name").or(field("semver")).or(field("tag")) {
        format!("{name}@sha1:{hash}")
    } else {
        format!("{}@sha1:{hash}", field("branch").unwrap_or("master"))
    };
    Resolved {
        revision,
        commit: None,
    }
}

/// The refs of a repository as `git ls-remote` lists them (annotated tags also peeled, as
/// `<tag>^{}`), read in the repository itself: one git process instead of ls-remote's three
/// (it runs `git-upload-pack` through a shell).
fn list_refs(dir: &Path, url: &str) -> Result<Vec<(String, String)>, GitError> {
    let out = git(
        Some(dir),
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname) %(*objectname)",
        ],
    )
    .map_err(|e| GitError::Ref(format!("unable to list remote refs of '{url}': {e}")))?;
    let mut refs = Vec::new();
    for line in out.lines() {
        let mut parts = line.split(' ');
        let (Some(sha), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        refs.push((sha.to_string(), name.to_string()));
        if let Some(target) = parts.next().filter(|t| !t.is_empty()) {
            refs.push((target.to_string(), format!("{name}^{{}}")));
        }
    }
    Ok(refs)
}

/// The commit a ref points at (an annotated tag is peeled to its commit).
fn peeled(refs: &[(String, String)], name: &str) -> Option<String> {
    let peeled_name = format!("{name}^{{}}");
    refs.iter()
        .find(|(_, n)| *n == peeled_name)
        .or_else(|| refs.iter().find(|(_, n)| n == name))
        .map(|(sha, _)| sha.clone())
}

/// Parses a tag as a version the way Flux's semver library does: an optional `v`, and missing
/// minor/patch parts taken as 0.
fn tag_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let parts = core.split('.').count();
    let padded = match parts {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        _ => return None,
    };
    semver::Version::parse(&padded).ok()
}

/// Flux's constraints (Masterminds syntax: space or comma separated, `||` alternatives, a bare
/// version means exactly that version) as `semver` requirements.
pub(crate) fn constraint(text: &str) -> Vec<semver::VersionReq> {
    text.split("||")
        .filter_map(|alt| {
            let mut parts: Vec<String> = Vec::new();
            let mut pending_op = String::new();
            for token in alt.replace(',', " ").split_whitespace() {
                if token.chars().all(|c| "<>=!~^".contains(c)) {
                    pending_op.push_str(token);
                    continue;
                }
                let mut part = std::mem::take(&mut pending_op);
                part.push_str(token);
                let bare = part.starts_with(|c: char| c.is_ascii_digit() || c == 'v');
                let part = part.replacen('v', "", usize::from(part.starts_with('v')));
                parts.push(if bare && !part.contains(['*', 'x', 'X']) {
                    format!("={part}")
                } else {
                    part
                });
            }
            if parts.is_empty() {
                return None;
            }
            semver::VersionReq::parse(&parts.join(", ")).ok()
        })
        .collect()
}

fn highest_matching_tag(refs: &[(String, String)], text: &str) -> Option<(String, String)> {
    let reqs = constraint(text);
    let tags: BTreeSet<&str> = refs
        .iter()
        .filter_map(|(_, n)| n.strip_prefix("refs/tags/"))
        .map(|t| t.trim_end_matches("^{}"))
        .collect();
    let best = tags
        .into_iter()
        .filter_map(|t| tag_version(t).map(|v| (v, t)))
        .filter(|(v, _)| reqs.iter().any(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0))?;
    let sha = peeled(refs, &format!("refs/tags/{}", best.1))?;
    Some((best.1.to_string(), sha))
}

/// The files of one commit.
pub struct Snapshot {
    tree: Arc<Tree>,
}

struct Tree {
    repo: PathBuf,
    commit: String,
    files: BTreeSet<String>,
    /// Files already read.
    blobs: Mutex<HashMap<String, String>>,
}

impl Snapshot {
    pub fn files(&self) -> &BTreeSet<String> {
        &self.tree.files
    }

    pub fn is_file(&self, path: &str) -> bool {
        self.tree.files.contains(path)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        if path.is_empty() {
            return !self.tree.files.is_empty();
        }
        let prefix = format!("{path}/");
        self.tree.files.iter().any(|f| f.starts_with(&prefix))
    }

    pub fn read(&self, path: &str) -> Result<String, GitError> {
        if let Some(content) = lock(&self.tree.blobs).get(path) {
            return Ok(content.clone());
        }
        let content = git(
            Some(&self.tree.repo),
            &["cat-file", "blob", &format!("{}:{path}", self.tree.commit)],
        )?;
        lock(&self.tree.blobs).insert(path.to_string(), content.clone());
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masterminds_constraints() {
        let matches = |c: &str, v: &str| {
            let v = semver::Version::parse(v).unwrap();
            constraint(c).iter().any(|r| r.matches(&v))
        };
        assert!(matches(">=1.0.0 <2.0.0", "1.5.0"));
        assert!(!matches(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(matches("1.2.3", "1.2.3"));
        assert!(!matches("1.2.3", "1.2.4"));
        assert!(matches("~1.2", "1.2.9"));
        assert!(matches("<1.0.0 || >=3.0.0", "3.1.0"));
        assert!(matches(">= 1.0", "1.0.0"));
        assert!(matches("*", "4.0.0"));
    }

    #[test]
    fn url_locations() {
        let mut map = BTreeMap::new();
        map.insert(
            "https://github.com/Azure/x".to_string(),
            PathBuf::from("/r"),
        );
        let g = Git::new(map, PathBuf::from("/tmp"));
        assert_eq!(
            g.locate("https://github.com/azure/x.git"),
            Location::Local("/r".into())
        );
        assert_eq!(
            g.locate("ssh://git@github.com/Azure/x.git"),
            Location::Local("/r".into())
        );
        assert_eq!(
            g.locate("git@github.com:Azure/x"),
            Location::Local("/r".into())
        );
        assert_eq!(g.locate("file:///a/b"), Location::Local("/a/b".into()));
        assert_eq!(
            g.locate("git://127.0.0.1:9418/r"),
            Location::Remote("git://127.0.0.1:9418/r".into())
        );
        assert_eq!(g.locate("https://example.com/r"), Location::Unreachable);
    }

    #[test]
    fn synthetic_revisions_are_stable_and_flux_shaped() {
        let r = serde_json::json!({"branch": "main"});
        let a = synthetic("https://example.com/r", &r);
        assert_eq!(a, synthetic("https://example.com/r", &r));
        assert!(a.revision.starts_with("main@sha1:"));
        assert_eq!(a.revision.len(), "main@sha1:".len() + 40);
    }
}
