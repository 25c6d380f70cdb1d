//! Data-subject rights (issue 6): the request register with its legal deadlines
//! ([`register`]); restriction, legal holds, rectification and erasure by crypto-shredding
//! ([`service`]); the access and portability export ([`export`]).

pub mod data;
pub mod export;
pub mod ledger;
pub mod register;
pub mod service;

pub use data::{
    Coverage, Erasure, ErasureRecords, ErasureTally, LegalHoldChange, Rectification, Rectified,
    RestrictionChange, SUBJECT_DATA_TABLES, SealErasure, SubjectData, SubjectStanding,
};
pub use ledger::{ErasureLedger, FileErasureLedger, LedgerEntry, LedgerFile, write_atomically};
pub use register::{
    NewRightsRequest, RequestKind, RequestStatus, RightsError, RightsRequest, RightsRequests,
    due_date,
};
pub use service::{ErasureReceipt, RightsSettings, SubjectRights, SubjectRightsError};
