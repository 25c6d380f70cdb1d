//! Structured logs on stderr: JSON lines in production, readable text on a terminal.
//!
//! What may be logged: pseudonymous ids (`sub_…`, `int_…`, `key_…`, `req_…`), route templates,
//! status codes, timings, error kinds. What never is: phone numbers, names, message text,
//! tokens, keys, raw request bodies, query strings or headers. The types that hold such data
//! redact themselves in `Debug`, and the log-scanning test keeps this true.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, early; later calls are ignored.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests start several servers in one process): keep the first.
    let _ = result;
}
