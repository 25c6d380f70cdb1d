//! Data-subject rights (issue 6). Built so far: the request register with its legal deadlines
//! ([`register`]).

pub mod register;

pub use register::{
    NewRightsRequest, RequestKind, RequestStatus, RightsError, RightsRequest, RightsRequests,
    due_date,
};
