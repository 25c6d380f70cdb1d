//! The provider register at start-up: the shipped starting entries (added once, never
//! overwritten), the reviews recorded in configuration (`[vendors.<id>]`, applied when they
//! differ), and a warning for each configured channel whose vendor may not carry messages.

use std::sync::Arc;

use herald_domain::clock::Clock;
use herald_domain::store::Store;
use herald_domain::vendors::builtin::{self, HERALD_SANDBOX, META_WHATSAPP_CLOUD};
use herald_domain::vendors::{VendorError, VendorId, Vendors};

use super::StartupError;
use crate::config::Config;

/// The vendor each configured channel goes through.
pub fn channel_vendors(config: &Config) -> Vec<(&'static str, VendorId)> {
    let mut out = Vec::new();
    if let Some(w) = &config.whatsapp {
        let id = w.vendor.as_deref().unwrap_or(META_WHATSAPP_CLOUD);
        if let Some(id) = VendorId::parse(id) {
            out.push(("whatsapp", id));
        }
    } else if let Some(id) = VendorId::parse(HERALD_SANDBOX) {
        out.push(("sandbox", id));
    }
    out
}

/// What the send path checks: the vendor of the channel this installation sends through.
pub fn send_route(
    config: &Config,
    register: &Vendors,
) -> Result<herald_domain::messages::ChannelVendor, StartupError> {
    let (_, vendor) = channel_vendors(config)
        .into_iter()
        .next()
        .ok_or_else(|| StartupError::Vendors("whatsapp.vendor is not a vendor id".into()))?;
    Ok(herald_domain::messages::ChannelVendor {
        vendor,
        register: register.clone(),
    })
}

fn failed(e: VendorError) -> StartupError {
    StartupError::Vendors(e.to_string())
}

/// How far ahead a review falling due is warned about (and counted in metrics).
pub const REVIEW_WARNING_DAYS: i64 = 30;

pub(super) async fn open_register(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    config: &Config,
) -> Result<Vendors, StartupError> {
    let vendors = Vendors::new(Arc::clone(store), Arc::clone(clock));
    for (id, facts, status) in [builtin::meta_whatsapp_cloud(), builtin::herald_sandbox()] {
        vendors
            .ensure(
                id,
                facts,
                status,
                true,
                "the starting entry Herald ships (docs/compliance.md)",
            )
            .await
            .map_err(failed)?;
    }
    vendors.refresh().await.map_err(failed)?;
    for (name, configured) in &config.vendors {
        // Validated at load time.
        let Some(id) = VendorId::parse(name) else {
            continue;
        };
        let Some(current) = vendors.list().into_iter().find(|v| v.id == id) else {
            return Err(StartupError::Vendors(format!(
                "vendors.{name}: no such vendor in the register (add it first: POST /v1/vendors or herald vendors add)"
            )));
        };
        let facts = configured.apply(current.facts.clone());
        if facts != current.facts || configured.status != current.status {
            let reason = format!("configuration ([vendors.{name}]): {}", configured.reason);
            vendors
                .ensure(id, facts, configured.status, false, &reason)
                .await
                .map_err(failed)?;
        }
    }
    for (id, due) in vendors.reviews_due_within(REVIEW_WARNING_DAYS) {
        tracing::warn!(vendor = %id, due = %due, "a vendor's review falls due within 30 days: once it passes, the vendor carries no messages");
    }
    for (channel, id) in channel_vendors(config) {
        if let Err(why) = vendors.standing_of(&id) {
            tracing::warn!(
                channel,
                vendor = %id,
                reason = why.code(),
                "the channel's vendor may not carry messages yet: review it in the provider register (docs/compliance.md)"
            );
        }
    }
    Ok(vendors)
}
