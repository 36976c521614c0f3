//! The data-plane bearer token: read from a file that is re-read whenever it changes (projected
//! service-account tokens and Arc's token refresher rotate it in place), or given directly for
//! tests. The value never appears in `Debug` output, logs or errors.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Re-read the file at least this often even if its metadata looks unchanged, in case a
/// rewrite kept both size and (coarse) modification time.
const MAX_CACHE_AGE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub enum TokenSource {
    Static(String),
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("Static(<redacted>)"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    Empty(PathBuf),
    #[error("the token contains characters not allowed in an HTTP header")]
    NotHeaderSafe,
}

/// A bearer token; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

struct Cached {
    modified: Option<SystemTime>,
    len: u64,
    read_at: Instant,
    token: Token,
}

pub struct TokenProvider {
    source: TokenSource,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(source: TokenSource) -> Self {
        TokenProvider {
            source,
            cache: Mutex::new(None),
        }
    }

    /// The current token; a file is stat'ed on every call and read again only when it changed.
    pub fn token(&self) -> Result<Token, TokenError> {
        let path = match &self.source {
            TokenSource::Static(t) => return check(t.trim().to_string()),
            TokenSource::File(p) => p,
        };
        let read_err = |source| TokenError::Read {
            path: path.clone(),
            source,
        };
        // metadata() follows symlinks, so the ..data symlink swap of projected volumes shows up.
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let modified = meta.modified().ok();
        let len = meta.len();
        if let Ok(cache) = self.cache.lock() {
            if let Some(c) = cache.as_ref() {
                if c.modified == modified
                    && modified.is_some()
                    && c.len == len
                    && c.read_at.elapsed() < MAX_CACHE_AGE
                {
                    return Ok(c.token.clone());
                }
            }
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let value = text.trim().to_string();
        if value.is_empty() {
            return Err(TokenError::Empty(path.clone()));
        }
        let token = check(value)?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(Cached {
                modified,
                len,
                read_at: Instant::now(),
                token: token.clone(),
            });
        }
        Ok(token)
    }
}

fn check(value: String) -> Result<Token, TokenError> {
    if value.is_empty() || value.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(TokenError::NotHeaderSafe);
    }
    Ok(Token(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_token_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let p = TokenProvider::new(TokenSource::File(path.clone()));
        assert_eq!(p.token().expect("token").expose(), "first-token");
        assert_eq!(p.token().expect("token").expose(), "first-token");
        std::fs::write(&path, "second-token-longer").expect("write");
        assert_eq!(p.token().expect("token").expose(), "second-token-longer");
        // Same length, different mtime: also noticed.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "third--token-longer").expect("write");
        let f = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .expect("set mtime");
        assert_eq!(p.token().expect("token").expose(), "third--token-longer");
    }

    #[test]
    fn missing_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let p = TokenProvider::new(TokenSource::File(path.clone()));
        assert!(matches!(p.token(), Err(TokenError::Read { .. })));
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(p.token(), Err(TokenError::Empty(_))));
        std::fs::write(&path, "bad token").expect("write");
        assert!(matches!(p.token(), Err(TokenError::NotHeaderSafe)));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = TokenSource::Static("s3cr3t".into());
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let p = TokenProvider::new(s);
        let t = p.token().expect("token");
        assert!(!format!("{t:?} {p:?}").contains("s3cr3t"));
    }
}
