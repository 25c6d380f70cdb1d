//! Reviews recorded in configuration (`[vendors.<id>]`): automated deployments and test
//! harnesses start with the vendor the operator approved, and the register records that it came
//! from the configuration. Fields given override the register's entry (the shipped starting
//! entry for Meta's WhatsApp Cloud API, or one added through the API).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use herald_domain::vendors::{
    Baa, Certification, Dpa, StorageMode, TransferMechanism, VendorFacts, VendorId, VendorStatus,
};
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    pub status: VendorStatus,
    /// Why (kept in the vendor's history), e.g. "annual review 2026, ticket SEC-142".
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpa: Option<Dpa>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baa: Option<Baa>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certifications: Option<Vec<Certification>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_regions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_regions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_mechanism: Option<TransferMechanism>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mode: Option<StorageMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_review_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_review_due: Option<NaiveDate>,
}

impl VendorConfig {
    /// `base` with the configured fields in place of its own.
    pub fn apply(&self, mut base: VendorFacts) -> VendorFacts {
        if let Some(dpa) = &self.dpa {
            base.dpa = Some(dpa.clone());
        }
        if let Some(baa) = &self.baa {
            base.baa = Some(baa.clone());
        }
        if let Some(v) = &self.certifications {
            base.certifications = v.clone();
        }
        if let Some(v) = &self.processing_regions {
            base.processing_regions = v.clone();
        }
        if let Some(v) = &self.storage_regions {
            base.storage_regions = v.clone();
        }
        if let Some(v) = self.transfer_mechanism {
            base.transfer_mechanism = v;
        }
        if let Some(v) = &self.storage_mode {
            base.storage_mode = v.clone();
        }
        if let Some(v) = self.last_review_at {
            base.last_review_at = Some(v);
        }
        if let Some(v) = self.next_review_due {
            base.next_review_due = Some(v);
        }
        base
    }
}

pub type Vendors = BTreeMap<String, VendorConfig>;

impl Config {
    pub(super) fn validate_vendors(&self) -> Result<(), ConfigError> {
        for (id, vendor) in &self.vendors {
            if VendorId::parse(id).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "vendors.{id}: a vendor id is 3 to 40 of a-z, 0-9 and _, starting with a letter"
                )));
            }
            if vendor.reason.trim().is_empty() || vendor.reason.chars().count() > 1000 {
                return Err(ConfigError::Invalid(format!(
                    "vendors.{id}.reason: say why, in 1 to 1000 characters"
                )));
            }
        }
        if let Some(w) = &self.whatsapp
            && let Some(vendor) = &w.vendor
            && VendorId::parse(vendor).is_none()
        {
            return Err(ConfigError::Invalid(
                "whatsapp.vendor: a vendor id (3 to 40 of a-z, 0-9 and _)".into(),
            ));
        }
        Ok(())
    }
}
