//! `/v1`: the integrator and operator API.

mod audit;
mod backups;
mod consents;
mod incident_response;
mod incidents;
mod integrations;
mod messages;
mod oauth_clients;
mod requests;
mod subject_rights;
mod subjects;
mod vendors;
mod webhooks;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(subjects::router())
        .merge(subject_rights::router())
        .merge(integrations::router())
        .merge(oauth_clients::router())
        .merge(audit::router())
        .merge(backups::router())
        .merge(incidents::router())
        .merge(incident_response::router())
        .merge(messages::router())
        .merge(webhooks::router())
        .merge(consents::router())
        .merge(requests::router())
        .merge(vendors::router())
}

/// The page one more than asked for: the extra item only says there is more (see
/// [`Page::from_overfetch`]).
pub fn overfetch(page: &herald_domain::store::PageRequest) -> herald_domain::store::PageRequest {
    herald_domain::store::PageRequest {
        after: page.after.clone(),
        limit: page.limit + 1,
    }
}

/// One page of a list. `next` is the cursor for `?after=`, absent on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// Builds a page from up to `limit + 1` items fetched: the extra one only says there is
    /// more.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor)
        } else {
            None
        };
        Self { data: items, next }
    }
}
