//! Logging: JSON lines on stdout, level from `--log-level` unless `RUST_LOG` says otherwise.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Info,
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(level: LogLevel) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // kube's own chatter at info would drown the reconciler's lines.
        EnvFilter::new(format!("{},kube=warn,hyper=warn", level.directive()))
    });
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        // A log line that cannot be written (stdout on a full disk) is dropped. The default
        // reports it with `eprintln!`, which panics when stderr fails too and took the whole
        // process down at its first log line.
        .log_internal_errors(false)
        .try_init();
}
