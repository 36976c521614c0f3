//! Runtime-adjustable fault injection: errors per verb, latency, throttling, watch drops.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::apiserver::errors::ApiError;

/// One error-injection rule: `verb` (None = any verb) fails with `code` at `rate` (0..=1).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRule {
    pub verb: Option<String>,
    pub code: u16,
    pub rate: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub error_rules: Vec<ErrorRule>,
    pub latency: Duration,
    pub watch_drop_every: Option<Duration>,
    /// (rate, Retry-After seconds) of 429 answers.
    pub throttle: Option<(f64, u64)>,
}

impl FaultConfig {
    /// Parses `VERB=CODE:RATE` (VERB may be `*`), as given to `--fault-error-rate`.
    pub fn parse_error_rule(s: &str) -> Result<ErrorRule, String> {
        let (verb, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("expected VERB=CODE:RATE, got {s:?}"))?;
        let (code, rate) = rest
            .split_once(':')
            .ok_or_else(|| format!("expected VERB=CODE:RATE, got {s:?}"))?;
        let code: u16 = code
            .parse()
            .map_err(|_| format!("bad status code in {s:?}"))?;
        let rate: f64 = rate.parse().map_err(|_| format!("bad rate in {s:?}"))?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("rate must be within 0..=1 in {s:?}"));
        }
        let verb = match verb {
            "*" | "" => None,
            v => Some(v.to_string()),
        };
        Ok(ErrorRule { verb, code, rate })
    }
}

#[derive(Debug)]
struct Inner {
    config: RwLock<FaultConfig>,
    disconnect: tokio::sync::watch::Sender<u64>,
}

/// Cheap to clone; all clones adjust the same server.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    inner: Arc<Inner>,
}

impl FaultHandle {
    pub fn new(config: FaultConfig) -> Self {
        let (tx, _) = tokio::sync::watch::channel(0);
        FaultHandle {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                disconnect: tx,
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut FaultConfig)) {
        let mut guard = match self.inner.config.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }

    pub fn snapshot(&self) -> FaultConfig {
        match self.inner.config.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets (replaces) the error rate for `verb` (None = every verb) and `code`.
    pub fn set_error_rate(&self, verb: Option<&str>, code: u16, rate: f64) {
        self.update(|c| {
            c.error_rules
                .retain(|r| !(r.verb.as_deref() == verb && r.code == code));
            if rate > 0.0 {
                c.error_rules.push(ErrorRule {
                    verb: verb.map(str::to_string),
                    code,
                    rate,
                });
            }
        });
    }

    pub fn set_latency(&self, latency: Duration) {
        self.update(|c| c.latency = latency);
    }

    pub fn drop_watches_every(&self, every: Option<Duration>) {
        self.update(|c| c.watch_drop_every = every);
    }

    /// Ends every open watch stream now (clients see a clean end of stream, as on apiserver restart).
    pub fn disconnect_watches_now(&self) {
        self.inner.disconnect.send_modify(|n| *n += 1);
    }

    pub fn throttle(&self, rate: f64, retry_after_secs: u64) {
        self.update(|c| {
            c.throttle = if rate > 0.0 {
                Some((rate, retry_after_secs))
            } else {
                None
            }
        });
    }

    pub fn clear(&self) {
        self.update(|c| *c = FaultConfig::default());
    }

    pub(crate) fn disconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.disconnect.subscribe()
    }

    /// Decides the fate of one request: an injected error, after the configured latency.
    pub(crate) async fn before_request(&self, verb: &str) -> Result<(), ApiError> {
        let c = self.snapshot();
        if !c.latency.is_zero() {
            tokio::time::sleep(c.latency).await;
        }
        if let Some((rate, retry)) = c.throttle {
            if fastrand::f64() < rate {
                return Err(ApiError::too_many_requests(retry));
            }
        }
        for r in &c.error_rules {
            if r.verb.as_deref().is_none_or(|v| v == verb) && fastrand::f64() < r.rate {
                return Err(ApiError::from_code(r.code, verb));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let r = FaultConfig::parse_error_rule("get=503:0.5").unwrap();
        assert_eq!(r.verb.as_deref(), Some("get"));
        assert_eq!(r.code, 503);
        assert!(FaultConfig::parse_error_rule("*=500:0.1")
            .unwrap()
            .verb
            .is_none());
        assert!(FaultConfig::parse_error_rule("get=503:2").is_err());
        assert!(FaultConfig::parse_error_rule("get").is_err());
    }
}
