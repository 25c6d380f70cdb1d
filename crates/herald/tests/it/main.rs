//! Herald's integration tests: one binary, one module per area. Every test that touches
//! storage runs on SQLite, and on PostgreSQL when `HERALD_TEST_DATABASE_URL` is set (see
//! `helpers.rs`). Tests talk to a real server over real HTTP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "tests fail loudly"
)]

mod audit;
mod audit_guard;
mod auth;
mod backup;
mod backup_cli;
mod callbacks;
mod consent;
mod consent_kit;
mod conventions;
mod delivery;
mod encryption;
mod erasure;
mod events;
mod fakes;
mod helpers;
mod incident_response;
mod incidents;
mod isolation;
mod limits;
mod messages;
mod oauth;
mod oauth_kit;
mod oauth_lifecycle;
mod ops;
mod ownership;
mod process;
mod requests;
mod resilience;
mod rights;
mod storage;
mod subject_word;
mod subjects;
mod vendors;
