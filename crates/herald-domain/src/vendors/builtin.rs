//! The starting entries Herald ships: Meta's WhatsApp Cloud API with the facts Meta publishes,
//! `unreviewed` — the operator must review and approve it (and hold the contract) — and Herald's
//! own sandbox, approved.

use super::model::{
    Deletion, DeletionSupport, Role, RoleKind, StorageMode, TransferMechanism, VendorFacts,
    VendorId, VendorStatus,
};

pub const META_WHATSAPP_CLOUD: &str = "meta_whatsapp_cloud";
pub const HERALD_SANDBOX: &str = "herald_sandbox";

/// Meta's WhatsApp Business Platform (Cloud API), as Meta documents it. No BAA: third-party
/// HIPAA guides consistently report that Meta signs none for WhatsApp.
pub fn meta_whatsapp_cloud() -> (VendorId, VendorFacts, VendorStatus) {
    let facts = VendorFacts {
        legal_name: "Meta Platforms Ireland Limited".into(),
        service: "WhatsApp Business Platform, Cloud API".into(),
        role: Role {
            kind: RoleKind::Processor,
            note: Some(
                "Processor for the business's messages under the WhatsApp Business Data Processing Terms; confirm the role for your use".into(),
            ),
        },
        dpa: None,
        baa: None,
        certifications: Vec::new(),
        processing_regions: vec!["global".into()],
        storage_regions: vec!["us".into()],
        transfer_mechanism: TransferMechanism::None,
        storage_mode: StorageMode {
            kind: "default".into(),
            retention: Some("message content at rest up to 30 days".into()),
            note: Some(
                "Local storage keeps content at rest only in a chosen region after up to 60 minutes in use; No Storage keeps content at most 1 hour in transit and nothing at rest".into(),
            ),
        },
        deletion: Deletion {
            support: DeletionSupport::None,
            covers: Some(
                "no API deletes delivered messages; content expires with the storage mode".into(),
            ),
        },
        sub_processors: Vec::new(),
        security_contact: None,
        last_review_at: None,
        next_review_due: None,
        sources: vec![
            "https://developers.facebook.com/documentation/business-messaging/whatsapp/local-storage".into(),
            "https://developers.facebook.com/documentation/business-messaging/whatsapp/no-storage/".into(),
        ],
    };
    (
        VendorId::known(META_WHATSAPP_CLOUD),
        facts,
        VendorStatus::Unreviewed,
    )
}

/// The sandbox channel: messages never leave Herald.
pub fn herald_sandbox() -> (VendorId, VendorFacts, VendorStatus) {
    let facts = VendorFacts {
        legal_name: "Herald (this installation)".into(),
        service: "sandbox channel: messages stay in Herald".into(),
        role: Role {
            kind: RoleKind::Internal,
            note: None,
        },
        dpa: None,
        baa: None,
        certifications: Vec::new(),
        processing_regions: Vec::new(),
        storage_regions: Vec::new(),
        transfer_mechanism: TransferMechanism::NotApplicable,
        storage_mode: StorageMode {
            kind: "none".into(),
            retention: None,
            note: None,
        },
        deletion: Deletion {
            support: DeletionSupport::Api,
            covers: Some("everything: the data never leaves Herald".into()),
        },
        sub_processors: Vec::new(),
        security_contact: None,
        last_review_at: None,
        next_review_due: None,
        sources: Vec::new(),
    };
    (
        VendorId::known(HERALD_SANDBOX),
        facts,
        VendorStatus::Approved,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::model::{NotApproved, standing, validate};

    #[test]
    fn meta_starts_unreviewed_and_the_sandbox_approved() {
        for id in [META_WHATSAPP_CLOUD, HERALD_SANDBOX] {
            assert!(VendorId::parse(id).is_some(), "{id}");
        }
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let (_, meta, status) = meta_whatsapp_cloud();
        assert_eq!(validate(&meta), Ok(()));
        assert!(meta.baa.is_none(), "Meta signs no BAA for WhatsApp");
        assert_eq!(standing(status, &meta, today), Err(NotApproved::Unreviewed));
        // Approving it is not enough: the DPA must be on file.
        assert_eq!(
            standing(VendorStatus::Approved, &meta, today),
            Err(NotApproved::DpaMissing)
        );
        let (_, sandbox, status) = herald_sandbox();
        assert_eq!(validate(&sandbox), Ok(()));
        assert_eq!(standing(status, &sandbox, today), Ok(()));
    }
}
