//! Herald, the server and command line. A tour:
//!
//! - [`cli`]: the `herald` commands; `main.rs` only calls [`cli::main`].
//! - [`config`]: embedded defaults → `herald.toml` → `HERALD_*` environment; validated.
//! - [`startup`]: data directory, database and migrations, keys, admin bootstrap, the server
//!   loop and graceful shutdown ([`startup::Herald`]).
//! - [`http`]: axum routes (thin handlers), extractors (auth, JSON, ids, paging), problem
//!   documents, middleware (request ids, logs, metrics, security headers), OpenAPI.
//! - [`backup`]: encrypted backups, verification, restores and drills.
//! - [`workers`]: message delivery, provider callbacks, events to integrators, purges.
//! - [`outbound`]: HTTP for events to integrators (no redirects, no private targets).
//! - [`tls`], [`telemetry`], [`metrics`]: rustls serving, logs without personal data,
//!   Prometheus metrics.
//!
//! The capabilities themselves live in `herald-domain`; storage in `herald-store`;
//! cryptography in `herald-crypto`.

pub mod backup;
pub mod cli;
pub mod config;
mod erasure_guard;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod workers;

pub use config::Config;
pub use startup::Herald;
