//! Fault injection for the agent-facing endpoints, switchable at run time.
//!
//! Faults touch only what the agent calls (listing, status, heartbeat) so a test can keep
//! managing configurations while the agent suffers; a `refuse` outage is the exception, since a
//! closed port refuses everybody.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How the data plane is down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Outage {
    /// Stop accepting connections (and drop open ones): the client sees "connection refused".
    Refuse,
    /// Answer every agent request with 503 and `Retry-After`.
    Unavailable,
}

/// The faults in force. `Default` is a healthy data plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    pub outage: Option<Outage>,
    /// End the outage by itself after this many seconds (lets an HTTP caller lift a `refuse`
    /// outage it could not reach the server to lift).
    pub outage_seconds: Option<u64>,
    /// `Retry-After` of 503 (outage) and 429 answers.
    pub retry_after_secs: u64,
    /// Added to every agent request before it is handled.
    pub latency_ms: u64,
    /// Fraction (0..=1) of agent requests answered with `error_status`.
    pub error_rate: f64,
    /// A 5xx status for `error_rate`.
    pub error_status: u16,
    /// Fraction (0..=1) of agent requests answered 429 Too Many Requests.
    pub throttle_rate: f64,
    /// Withhold this many configurations from each listing while `count` still counts them,
    /// so the listing is partial (`count > value.len()`).
    pub withhold_items: usize,
    /// Cut listing bodies in half: `200` with JSON that does not parse (a body lost mid-way).
    pub truncate_body: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            outage: None,
            outage_seconds: None,
            retry_after_secs: 1,
            latency_ms: 0,
            error_rate: 0.0,
            error_status: 500,
            throttle_rate: 0.0,
            withhold_items: 0,
            truncate_body: false,
        }
    }
}

/// What the faults make of one agent request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Status, error code and `Retry-After` seconds (if any).
    Respond(u16, &'static str, Option<u64>),
    Proceed,
}

impl FaultConfig {
    pub(crate) fn decide(&self) -> Injected {
        if self.outage == Some(Outage::Unavailable) {
            return Injected::Respond(503, "ServiceUnavailable", Some(self.retry_after_secs));
        }
        if self.throttle_rate > 0.0 && fastrand::f64() < self.throttle_rate {
            return Injected::Respond(429, "TooManyRequests", Some(self.retry_after_secs));
        }
        if self.error_rate > 0.0 && fastrand::f64() < self.error_rate {
            let status = if (500..=599).contains(&self.error_status) {
                self.error_status
            } else {
                500
            };
            let retry = (status == 503).then_some(self.retry_after_secs);
            return Injected::Respond(status, "InternalServerError", retry);
        }
        Injected::Proceed
    }

    pub(crate) fn refusing(&self) -> bool {
        self.outage == Some(Outage::Refuse)
    }
}

/// Shared, live switch for the faults of one data plane.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    tx: Arc<watch::Sender<FaultConfig>>,
    /// Bumped on every change, so a timed outage ends only the outage it started.
    generation: Arc<AtomicU64>,
    /// Raw JSON texts that stand in for the listed configuration of the same name, for
    /// payloads the management API cannot store (duplicate keys, non-object items); the
    /// configuration stays stored, so the agent's status report for it is accepted. Not part of
    /// [`FaultConfig`] because it is test-only and not meant for the command line.
    raw_items: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl FaultHandle {
    pub fn new(config: FaultConfig) -> Self {
        let handle = FaultHandle {
            tx: Arc::new(watch::Sender::new(FaultConfig::default())),
            generation: Arc::new(AtomicU64::new(0)),
            raw_items: Arc::default(),
        };
        handle.set(config);
        handle
    }

    pub fn get(&self) -> FaultConfig {
        self.tx.borrow().clone()
    }

    /// Replaces every fault at once.
    pub fn set(&self, config: FaultConfig) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let timed = config
            .outage
            .is_some()
            .then_some(config.outage_seconds)
            .flatten();
        self.tx.send_replace(config);
        if let (Some(secs), Ok(rt)) = (timed, tokio::runtime::Handle::try_current()) {
            let this = self.clone();
            rt.spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                if this.generation.load(Ordering::SeqCst) == generation {
                    this.update(|f| {
                        f.outage = None;
                        f.outage_seconds = None;
                    });
                }
            });
        }
    }

    pub fn update(&self, change: impl FnOnce(&mut FaultConfig)) {
        let mut config = self.get();
        change(&mut config);
        self.set(config);
    }

    /// Back to a healthy data plane.
    pub fn clear(&self) {
        self.set(FaultConfig::default());
    }

    pub fn set_outage(&self, outage: Option<Outage>) {
        self.update(|f| {
            f.outage = outage;
            f.outage_seconds = None;
        });
    }

    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.update(|f| f.latency_ms = ms);
    }

    pub fn set_error_rate(&self, rate: f64, status: u16) {
        self.update(|f| {
            f.error_rate = rate;
            f.error_status = status;
        });
    }

    pub fn set_throttle(&self, rate: f64, retry_after_secs: u64) {
        self.update(|f| {
            f.throttle_rate = rate;
            f.retry_after_secs = retry_after_secs;
        });
    }

    pub fn set_retry_after(&self, secs: u64) {
        self.update(|f| f.retry_after_secs = secs);
    }

    /// Makes listings partial by withholding `items` configurations (0 = complete listings).
    pub fn set_partial_listing(&self, items: usize) {
        self.update(|f| f.withhold_items = items);
    }

    /// Makes listing bodies unparseable (cut in half) while `on`.
    pub fn set_truncated_listing(&self, on: bool) {
        self.update(|f| f.truncate_body = on);
    }

    /// Lists the configuration named by each key as the raw JSON text (one array element, not
    /// checked) instead of its stored form; an empty map ends the injection. Wakes no long poll:
    /// set it before the configurations are created.
    pub fn set_raw_listing_items(&self, items: std::collections::BTreeMap<String, String>) {
        *self
            .raw_items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = items;
    }

    pub(crate) fn raw_listing_items(&self) -> std::collections::BTreeMap<String, String> {
        self.raw_items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<FaultConfig> {
        self.tx.subscribe()
    }
}

impl Default for FaultHandle {
    fn default() -> Self {
        FaultHandle::new(FaultConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_by_default() {
        assert_eq!(FaultConfig::default().decide(), Injected::Proceed);
    }

    #[test]
    fn outage_wins_over_rates() {
        let f = FaultConfig {
            outage: Some(Outage::Unavailable),
            retry_after_secs: 7,
            throttle_rate: 1.0,
            ..FaultConfig::default()
        };
        assert_eq!(
            f.decide(),
            Injected::Respond(503, "ServiceUnavailable", Some(7))
        );
    }

    #[test]
    fn non_5xx_error_status_falls_back_to_500() {
        let f = FaultConfig {
            error_rate: 1.0,
            error_status: 404,
            ..FaultConfig::default()
        };
        assert_eq!(
            f.decide(),
            Injected::Respond(500, "InternalServerError", None)
        );
    }

    #[tokio::test]
    async fn timed_outage_ends_by_itself() {
        let h = FaultHandle::default();
        h.set(FaultConfig {
            outage: Some(Outage::Refuse),
            outage_seconds: Some(0),
            ..FaultConfig::default()
        });
        let mut rx = h.subscribe();
        let wait = async {
            while rx.borrow_and_update().outage.is_some() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .is_ok());
    }
}
