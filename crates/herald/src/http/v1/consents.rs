//! Consents: record consent obtained elsewhere, withdraw it, read the ledger, start a double
//! opt-in. Thin: the consent service decides and records; these handlers translate.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use herald_domain::consent::{ConsentOverview, ConsentView, EvidenceInput, Method};
use herald_domain::ids::{MessageId, SubjectId};
use herald_domain::messages::Channel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, ConsentsRead, ConsentsWrite, LinkedSubject};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_consent, withdraw_consent))
        .routes(routes!(list_consents))
        .routes(routes!(start_opt_in))
}

fn invalid(field: &str, rule: &'static str) -> Problem {
    Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
}

fn channel(name: Option<&str>) -> Result<Channel, Problem> {
    match name {
        None => Ok(Channel::Whatsapp),
        Some(name) => {
            Channel::parse(name).ok_or_else(|| invalid("channel", "the only channel is whatsapp"))
        }
    }
}

/// The subject and purpose from the path; a malformed subject id names nothing (404).

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// `api` (consent obtained by the integrator, e.g. in its app) or `web_form`.
    #[schema(example = "web_form")]
    method: String,
    /// The configured notice version the subject was shown (required when the purpose has
    /// notices).
    #[schema(example = "2026-01")]
    notice_version: Option<String>,
    /// When the subject gave consent (RFC 3339).
    #[schema(example = "2026-11-29T10:15:00Z", format = DateTime)]
    captured_at: String,
    /// Where: a form's address, a paper form's reference (stored encrypted).
    #[schema(example = "https://shop.example/newsletter", max_length = 2048)]
    source: Option<String>,
    /// The language the notice was shown in.
    #[schema(example = "de")]
    locale: Option<String>,
    /// Whether the box was ticked in advance; `true` is refused (not consent).
    prechecked: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Default `whatsapp`.
    channel: Option<String>,
    evidence: EvidenceRequest,
}

/// A record's current state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentBody {
    #[schema(example = "newsletter")]
    purpose: String,
    #[schema(example = "whatsapp")]
    channel: String,
    /// `granted`, `pending`, `withdrawn` or `expired`.
    #[schema(example = "granted")]
    state: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// While pending: when the request lapses.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl From<ConsentView> for ConsentBody {
    fn from(v: ConsentView) -> Self {
        Self {
            purpose: v.purpose,
            channel: v.channel.to_owned(),
            state: v.state.as_str().to_owned(),
            updated_at: v.updated_at,
            expires_at: v.expires_at,
        }
    }
}

/// Record consent the subject gave elsewhere (a web form, the integrator's app).
#[utoipa::path(put, path = "/v1/subjects/{id}/consents/{purpose}", tag = "consents",
    params(("id" = String, Path, description = "Subject id (sub_…)"),
           ("purpose" = String, Path, description = "A configured purpose")),
    request_body = ConsentRequest,
    security(("bearer" = ["consents:write"])),
    responses(
        (status = 200, description = "Recorded; the record's state", body = ConsentBody),
        (status = 400, description = "invalid_request (method, notice_version, captured_at, source, locale, prechecked)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "consent_stale (a later event stands; this one was kept as history), subject_opted_out (only the subject can opt in again)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "unknown_purpose", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn record_consent(
    State(state): State<AppState>,
    caller: Authorized<ConsentsWrite>,
    LinkedSubject(subject): LinkedSubject,
    Path((_, purpose)): Path<(String, String)>,
    ApiJson(body): ApiJson<ConsentRequest>,
) -> Result<(Extension<ActionAudited>, Json<ConsentBody>), Problem> {
    let channel = channel(body.channel.as_deref())?;
    let e = body.evidence;
    let method =
        Method::parse(&e.method).ok_or_else(|| invalid("evidence.method", "api or web_form"))?;
    let captured_at = DateTime::parse_from_rfc3339(&e.captured_at)
        .map_err(|_| invalid("evidence.captured_at", "an RFC 3339 time"))?
        .with_timezone(&Utc);
    let evidence = EvidenceInput {
        method,
        notice_version: e.notice_version,
        captured_at,
        source: e.source,
        locale: e.locale,
        prechecked: e.prechecked,
    };
    let view = state
        .consents
        .grant(
            &subject,
            &purpose,
            channel,
            evidence,
            &caller.principal.integration_id,
            &caller.initiator(),
        )
        .await
        .map_err(errors::consent)?;
    Ok((Extension(ActionAudited), Json(view.into())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelQuery {
    channel: Option<String>,
}

/// Withdraw consent (also an objection where none was recorded). Queued messages for the
/// purpose are cancelled before their next attempt.
#[utoipa::path(delete, path = "/v1/subjects/{id}/consents/{purpose}", tag = "consents",
    params(("id" = String, Path, description = "Subject id (sub_…)"),
           ("purpose" = String, Path, description = "A configured purpose"),
           ("channel" = Option<String>, Query, description = "Default whatsapp")),
    security(("bearer" = ["consents:write"])),
    responses(
        (status = 200, description = "Withdrawn; the record's state", body = ConsentBody),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "unknown_purpose", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn withdraw_consent(
    State(state): State<AppState>,
    caller: Authorized<ConsentsWrite>,
    LinkedSubject(subject): LinkedSubject,
    Path((_, purpose)): Path<(String, String)>,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(Extension<ActionAudited>, Json<ConsentBody>), Problem> {
    let Query(query) = query.map_err(|_| invalid("channel", "the only parameter is channel"))?;
    let channel = channel(query.channel.as_deref())?;
    let view = state
        .consents
        .withdraw(
            &subject,
            &purpose,
            channel,
            &caller.principal.integration_id,
            &caller.initiator(),
        )
        .await
        .map_err(errors::consent)?;
    Ok((Extension(ActionAudited), Json(view.into())))
}

/// The subject's consents: the current state per purpose and channel, and the full history.
/// Evidence (source, locale, the confirming message…) is shown only for the events the
/// caller's integration recorded (`admin`: all); other events carry `evidence: null`.
#[utoipa::path(get, path = "/v1/subjects/{id}/consents", tag = "consents",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    security(("bearer" = ["consents:read"])),
    responses(
        (status = 200, description = "Current state and history", body = ConsentsBody),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_consents(
    State(state): State<AppState>,
    caller: Authorized<ConsentsRead>,
    LinkedSubject(subject): LinkedSubject,
) -> Result<Json<ConsentsBody>, Problem> {
    let evidence_of = (!caller.principal.is_admin()).then_some(&caller.principal.integration_id);
    let overview = state
        .consents
        .overview(&subject, evidence_of)
        .await
        .map_err(errors::consent)?;
    Ok(Json(overview.into()))
}

/// One event of the ledger with its evidence.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryBody {
    #[schema(example = "cev_0c3k5m7p9r1t3v5x7z9b1d3f5h")]
    id: String,
    purpose: String,
    channel: String,
    /// `granted`, `pending`, `withdrawn` or `expired`.
    state: String,
    /// `api`, `web_form`, `double_opt_in`, `inbound_keyword`, `provider_preference` or
    /// `system`.
    method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    notice_version: Option<String>,
    /// SHA-256 (hex) of the exact notice text shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    notice_sha256: Option<String>,
    /// The integration that recorded or started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    integration_id: Option<String>,
    #[schema(format = DateTime)]
    captured_at: String,
    #[schema(format = DateTime)]
    recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Who made it: `subject` (a keyword, a button, a confirmation, an opt-in code,
    /// WhatsApp's own control), `integration` or `system`.
    origin: String,
    /// Whether it changed the record: an event older than the record's latest effective one
    /// (events arrive out of order) is kept but changes nothing.
    effective: bool,
    /// Source, locale, confirming message, keyword…, decrypted; `null` for events another
    /// integration recorded (or the subject's own events, to anyone but `admin`).
    #[schema(value_type = Option<Object>)]
    evidence: serde_json::Value,
}

/// A subject's consents: the current state per purpose and channel, and the whole ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentsBody {
    #[schema(value_type = String)]
    subject_id: SubjectId,
    consents: Vec<ConsentBody>,
    history: Vec<HistoryBody>,
}

impl From<ConsentOverview> for ConsentsBody {
    fn from(o: ConsentOverview) -> Self {
        Self {
            subject_id: o.subject_id,
            consents: o.consents.into_iter().map(ConsentBody::from).collect(),
            history: o
                .history
                .into_iter()
                .map(|h| HistoryBody {
                    id: h.id.as_str().to_owned(),
                    purpose: h.purpose,
                    channel: h.channel.to_owned(),
                    state: h.state.as_str().to_owned(),
                    method: h.method.as_str().to_owned(),
                    notice_version: h.notice_version,
                    notice_sha256: h.notice_sha256,
                    integration_id: h.integration_id.map(|i| i.as_str().to_owned()),
                    captured_at: h.captured_at,
                    recorded_at: h.recorded_at,
                    expires_at: h.expires_at,
                    origin: h.origin.as_str().to_owned(),
                    effective: h.effective,
                    evidence: h.evidence,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptInRequest {
    /// The subject's number. Present: Herald sends the confirmation template and waits for
    /// the confirmation. Absent: Herald issues a code the subject sends to the business
    /// number (click-to-chat), which confirms from the number itself.
    #[schema(example = "+4915112345678")]
    to: Option<String>,
    #[schema(example = "newsletter")]
    purpose: String,
    #[schema(example = "2026-01")]
    notice_version: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptInStartedBody {
    #[schema(value_type = String)]
    subject_id: SubjectId,
    /// `pending`, or `granted` when the subject had already opted in (nothing sent).
    #[schema(example = "pending")]
    status: &'static str,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::http::time::rfc3339_opt"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<herald_domain::clock::Timestamp>,
    /// The confirmation template's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    message_id: Option<MessageId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptInCodeBody {
    /// What the subject sends to the business number (alone or in a sentence).
    #[schema(example = "K7PQ2XMA")]
    code: String,
    purpose: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: herald_domain::clock::Timestamp,
}

/// Start a double opt-in.
#[utoipa::path(post, path = "/v1/opt-ins", tag = "consents",
    request_body = OptInRequest,
    security(("bearer" = ["consents:write"])),
    responses(
        (status = 202, description = "Pending: the confirmation template is queued", body = OptInStartedBody),
        (status = 200, description = "Already granted, or already pending: nothing sent", body = OptInStartedBody),
        (status = 201, description = "A user-initiated opt-in code (no `to`)", body = OptInCodeBody),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the scope, or subjects:write to reach a number not linked to the caller", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "subject_restricted, subject_opted_out", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "unknown_purpose, invalid_phone_number, opt_in_not_configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: too many confirmation requests to this number in 30 days", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn start_opt_in(
    State(state): State<AppState>,
    caller: Authorized<ConsentsWrite>,
    ApiJson(body): ApiJson<OptInRequest>,
) -> Result<Response, Problem> {
    let initiator = caller.initiator();
    let integration = &caller.principal.integration_id;
    let Some(to) = body.to else {
        let issued = state
            .consents
            .issue_code(&body.purpose, &body.notice_version, integration, &initiator)
            .await
            .map_err(errors::consent)?;
        let answer = OptInCodeBody {
            code: issued.code,
            purpose: issued.purpose,
            expires_at: issued.expires_at,
        };
        return Ok((StatusCode::CREATED, Extension(ActionAudited), Json(answer)).into_response());
    };
    let started = state
        .consents
        .start_opt_in(
            &to,
            &body.purpose,
            &body.notice_version,
            integration,
            caller.access(),
            &initiator,
        )
        .await
        .map_err(|e| match e {
            herald_domain::consent::ConsentError::Subject(
                herald_domain::subjects::SubjectError::Phone(p),
            ) => errors::phone(p, "to"),
            other => errors::consent(other),
        })?;
    // 202 when a confirmation was sent now; 200 when nothing was (already granted, or a
    // request already pending: asking again sends nothing).
    let status = if started.message_id.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let answer = OptInStartedBody {
        subject_id: started.subject_id,
        status: started.state.as_str(),
        expires_at: started.expires_at,
        message_id: started.message_id,
    };
    Ok((status, Extension(ActionAudited), Json(answer)).into_response())
}
