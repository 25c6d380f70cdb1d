//! Vendor due diligence (issue 17): the provider register — who processes messages for the
//! operator, under which contracts, where, and whether it may carry a message now.

pub mod builtin;
pub mod model;
pub mod register;

pub use model::{
    Baa, Certification, Deletion, DeletionSupport, Dpa, NotApproved, Role, RoleKind, StorageMode,
    TransferMechanism, VendorFacts, VendorId, VendorStatus, standing,
};
pub use register::{Vendor, VendorError, VendorHistoryRow, VendorRow, VendorStore, Vendors};
