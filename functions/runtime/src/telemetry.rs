//! `tracing` set-up.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log level used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=info";

/// Installs a global subscriber that writes one JSON object per event to
/// standard output, filtered by `RUST_LOG`. Functions call it once in `main`.
pub fn init_json() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        )
        .try_init();
}

/// Installs a global subscriber that writes readable lines to standard error,
/// for the command-line program, at `default` level unless `RUST_LOG` says otherwise.
/// Colours are used only when standard error is a terminal, so that logs
/// redirected to a file hold no escape codes.
pub fn init_text(default: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}
