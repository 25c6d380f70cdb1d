//! Herald's WhatsApp Business Cloud API channel (reference: `whatsapp-cloud-api.md`).
//!
//! - [`client`]: sending text and template messages; answers classified.
//! - [`errors`]: Meta's error codes → retry or fail with Herald's stable code.
//! - [`signature`]: `X-Hub-Signature-256` over the raw body; the set-up handshake's token.
//! - [`callback`]: webhook payloads → provider-neutral reports.
//!
//! Nothing here stores anything or knows HTTP routes: the `herald` crate wires it in.

pub mod callback;
pub mod client;
pub mod errors;
pub mod signature;

pub use callback::{PROVIDER, WhatsappCallbacks};
pub use client::{ClientError, WhatsappProvider, WhatsappSettings};
pub use signature::{SignatureError, verify, verify_token_matches};
