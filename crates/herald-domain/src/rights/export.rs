//! The access and portability export (GDPR Art. 15 and 20): one JSON document with everything
//! Herald holds about a subject, decrypted, and the processing information Art. 15(1) asks
//! for. Its shape is published as a JSON Schema (`docs/schemas/subject-export.schema.json`);
//! the tests validate every export against it, and compare the tables it covers with the live
//! schema ([`super::SUBJECT_DATA_TABLES`]).

use serde_json::{Map, Value, json};

use super::data::{AuditData, EventData, InboundData, MessageData, SubjectData};
use super::service::{SubjectRights, SubjectRightsError};
use crate::audit::{Action, AuditEvent, Details, Initiator, Outcome, Target};
use crate::consent::ConsentOverview;
use crate::ids::{MessageId, SubjectId};
use crate::keys::Keyring;
use crate::messages::delivery::provider_ref_binding;
use crate::messages::reports::inbound_binding;
use crate::messages::send::content_binding;
use crate::store::StoreError;
use crate::subjects::phone_binding;
use crate::webhooks::event::rfc3339;
use herald_crypto::SymmetricKey;
use herald_crypto::aead::Binding;

/// The export format's name and version, stated in every document.
pub const EXPORT_FORMAT: &str = "herald.subject_export";
pub const EXPORT_VERSION: u32 = 1;

/// Who receives the subject's data, for the export's processing section (Art. 15(1)(c)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    pub role: String,
    pub purpose: String,
}

/// What the export says about the processing, from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessingInfo {
    pub recipients: Vec<Recipient>,
    /// (data category, how long it is kept).
    pub retention: Vec<(String, String)>,
}

/// Decrypted content as the export shows it: JSON as stored, or the text if it is not JSON.
fn content(plain: &[u8]) -> Value {
    serde_json::from_slice(plain).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(plain)))
}

/// Opens a ciphertext where there is one, at the binding its writer used.
fn open(
    key: &SymmetricKey,
    at: &Binding<'_>,
    ciphertext: Option<&Vec<u8>>,
) -> Result<Option<Vec<u8>>, SubjectRightsError> {
    ciphertext
        .map(|c| Ok(Keyring::open_for_subject(key, at, c)?.to_vec()))
        .transpose()
}

fn message_id(id: &str) -> Result<MessageId, SubjectRightsError> {
    MessageId::parse(id)
        .map_err(|_| StoreError::Corrupt("a stored message id is malformed".into()).into())
}

fn message(key: &SymmetricKey, m: &MessageData) -> Result<Value, SubjectRightsError> {
    let id = message_id(&m.id)?;
    let body = open(key, &content_binding(&id), m.content_ciphertext.as_ref())?;
    let provider_id = open(
        key,
        &provider_ref_binding(&id),
        m.provider_ref_ciphertext.as_ref(),
    )?;
    Ok(json!({
        "id": m.id,
        "integration_id": m.integration_id,
        "channel": m.channel,
        "purpose": m.purpose,
        "kind": m.kind,
        "template": m.template_name.as_ref().map(|name| json!({
            "name": name,
            "language": m.template_language,
        })),
        "content": body.as_deref().map(content),
        "content_kept_until": m.content_purge_at.map(rfc3339),
        "phi": m.phi,
        "status": m.status,
        "attempts": m.attempts,
        "provider_message_id": provider_id.map(|p| String::from_utf8_lossy(&p).into_owned()),
        "error": m.error_code.as_ref().map(|code| json!({
            "code": code,
            "provider_code": m.provider_code,
        })),
        "consent_event_id": m.consent_event_id,
        "history": m.history.iter().map(|(status, at)| json!({
            "status": status,
            "at": rfc3339(*at),
        })).collect::<Vec<_>>(),
        "delivery_attempts": m.attempt_log.iter().map(|a| json!({
            "attempt": a.attempt,
            "started_at": rfc3339(a.started_at),
            "finished_at": rfc3339(a.finished_at),
            "outcome": a.outcome,
            "http_status": a.http_status,
            "provider_code": a.provider_code,
            "latency_ms": a.latency_ms,
        })).collect::<Vec<_>>(),
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
        "source": "integration",
    }))
}

fn inbound(key: &SymmetricKey, m: &InboundData) -> Result<Value, SubjectRightsError> {
    let body = open(
        key,
        &inbound_binding(&message_id(&m.id)?),
        m.content_ciphertext.as_ref(),
    )?;
    Ok(json!({
        "id": m.id,
        "channel": m.channel,
        "kind": m.kind,
        "content": body.as_deref().map(content),
        "content_kept_until": m.content_purge_at.map(rfc3339),
        "sent_at": rfc3339(m.sent_at),
        "received_at": rfc3339(m.received_at),
        // Art. 20 covers what the subject provided: these are the subject's own words.
        "source": "data_subject",
    }))
}

fn event(e: &EventData) -> Value {
    json!({
        "event_id": e.event_id,
        "endpoint_id": e.endpoint_id,
        "type": e.event_type,
        "status": e.status,
        "attempts": e.attempts,
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
    })
}

fn audit_entry(e: &AuditData) -> Value {
    json!({
        "seq": e.seq,
        "recorded_at": rfc3339(e.recorded_at),
        "entry": serde_json::from_str::<Value>(&e.body).unwrap_or(Value::Null),
    })
}

impl SubjectRights {
    /// Everything Herald holds about the subject, decrypted, as one JSON document. The export
    /// is recorded (`subject.exported`) before the document is handed out: no export without
    /// its audit entry.
    pub async fn export(
        &self,
        id: &SubjectId,
        initiator: &Initiator,
    ) -> Result<Value, SubjectRightsError> {
        // Entries written until now are sealed, so the export shows them with their numbers.
        if let Err(e) = self.inner.audit.seal().await {
            tracing::warn!(error = %e, "the audit trail could not be sealed before an export");
        }
        let data = self
            .inner
            .store
            .subject_data(id)
            .await?
            .ok_or(SubjectRightsError::NotFound)?;
        if data.standing.erased_at.is_some() {
            return Err(SubjectRightsError::Erased);
        }
        let consents = self.inner.consents.overview(id, None).await?;
        let document = self.document(&data, &consents).await?;
        let event = AuditEvent::new(initiator, Action::SubjectExported, Outcome::Success)
            .target(Target::Subject(id.clone()))
            .details(
                Details::new()
                    .with("messages", data.messages.len() as u64)
                    .with("inbound_messages", data.inbound_messages.len() as u64)
                    .with("consent_events", consents.history.len() as u64)
                    .with("audit_entries", data.audit_entries.len() as u64),
            );
        self.inner.audit.append(&event).await?;
        Ok(document)
    }

    async fn document(
        &self,
        data: &SubjectData,
        overview: &ConsentOverview,
    ) -> Result<Value, SubjectRightsError> {
        let inner = &self.inner;
        let id = &data.standing.record.id;
        let key = inner.keys.subject_key(id).await?;
        let phone = open(&key, &phone_binding(id), data.phone_ciphertext.as_ref())?
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let standing = &data.standing;
        let restriction = if standing.record.restricted {
            Some(json!({
                "since": standing.restricted_at.map(rfc3339),
                "reason": self.restriction_reason(standing).await?,
            }))
        } else {
            None
        };
        let consents = json!({
            "current": overview.consents.iter().map(|c| json!({
                "purpose": c.purpose,
                "channel": c.channel,
                "state": c.state.as_str(),
                "updated_at": c.updated_at,
                "expires_at": c.expires_at,
            })).collect::<Vec<_>>(),
            "history": overview.history.iter().map(|h| json!({
                "id": h.id.as_str(),
                "purpose": h.purpose,
                "channel": h.channel,
                "state": h.state.as_str(),
                "method": h.method.as_str(),
                "origin": h.origin.as_str(),
                "effective": h.effective,
                "notice_version": h.notice_version,
                "notice_sha256": h.notice_sha256,
                "integration_id": h.integration_id.as_ref().map(|i| i.as_str()),
                "captured_at": h.captured_at,
                "recorded_at": h.recorded_at,
                "expires_at": h.expires_at,
                "evidence": h.evidence,
            })).collect::<Vec<_>>(),
        });
        let now = inner.clock.now();
        let mut document = Map::new();
        document.insert("format".into(), json!(EXPORT_FORMAT));
        document.insert("version".into(), json!(EXPORT_VERSION));
        document.insert("generated_at".into(), json!(rfc3339(now)));
        document.insert(
            "subject".into(),
            json!({
                "id": id.as_str(),
                "created_at": rfc3339(standing.record.created_at),
                "contact": {"phone": phone},
                "restriction": restriction,
                "legal_hold": standing.legal_hold_at.map(|at| json!({"since": rfc3339(at)})),
                "rectified_at": standing.rectified_at.map(rfc3339),
                "whatsapp": {"last_inbound_at": standing.record.last_inbound_at.map(rfc3339)},
            }),
        );
        document.insert("consents".into(), consents);
        document.insert(
            "messages".into(),
            Value::Array(
                data.messages
                    .iter()
                    .map(|m| message(&key, m))
                    .collect::<Result<_, _>>()?,
            ),
        );
        document.insert(
            "inbound_messages".into(),
            Value::Array(
                data.inbound_messages
                    .iter()
                    .map(|m| inbound(&key, m))
                    .collect::<Result<_, _>>()?,
            ),
        );
        document.insert(
            "events".into(),
            Value::Array(data.events.iter().map(event).collect()),
        );
        document.insert(
            "integrations".into(),
            Value::Array(
                data.links
                    .iter()
                    .map(|l| {
                        json!({
                            "integration_id": l.integration_id,
                            "reason": l.reason,
                            "linked_at": rfc3339(l.linked_at),
                        })
                    })
                    .collect(),
            ),
        );
        document.insert(
            "rights_requests".into(),
            Value::Array(
                data.rights_requests
                    .iter()
                    .map(|r| {
                        json!({
                            "id": r.id.as_str(),
                            "kind": r.kind.as_str(),
                            "status": r.status(now).as_str(),
                            "received_at": rfc3339(r.received_at),
                            "due_at": rfc3339(r.due_at),
                            "extended_months": r.extended_months,
                            "completed_at": r.completed_at.map(rfc3339),
                        })
                    })
                    .collect(),
            ),
        );
        document.insert(
            "audit_entries".into(),
            Value::Array(data.audit_entries.iter().map(audit_entry).collect()),
        );
        // Art. 15 and 34: the incidents (possible breaches) that concerned the subject's data.
        document.insert(
            "incidents".into(),
            Value::Array(
                data.incidents
                    .iter()
                    .map(|i| {
                        json!({
                            "incident_id": i.incident_id,
                            "kinds": i.kinds.split(',').filter(|k| !k.is_empty()).collect::<Vec<_>>(),
                            "first_at": rfc3339(i.first_at),
                            "last_at": rfc3339(i.last_at),
                            "notice_message_id": i.notice_message_id,
                            "notice_at": i.notice_at.map(rfc3339),
                        })
                    })
                    .collect(),
            ),
        );
        document.insert("processing".into(), self.processing());
        Ok(Value::Object(document))
    }

    /// Art. 15(1)(a)-(h): purposes and their lawful bases, categories, recipients, retention,
    /// the subject's rights, the source, automated decisions.
    fn processing(&self) -> Value {
        let info = &self.inner.processing;
        let mut purposes: Vec<Value> = self
            .inner
            .consents
            .catalog()
            .purposes()
            .map(|p| {
                json!({
                    "name": p.name,
                    "lawful_basis": p.basis.as_str(),
                    "marketing": p.marketing,
                    "internal": p.internal,
                    "channels": p.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        purposes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({
            "controller_note": "The business that connected this gateway is the controller; Herald processes on its behalf.",
            "purposes": purposes,
            "categories": ["contact data (phone number)", "messages sent and received", "consent records and their evidence", "delivery metadata"],
            "recipients": info.recipients.iter().map(|r| json!({
                "name": r.name,
                "role": r.role,
                "purpose": r.purpose,
            })).collect::<Vec<_>>(),
            "retention": info.retention.iter().map(|(category, period)| json!({
                "category": category,
                "period": period,
            })).collect::<Vec<_>>(),
            "source": "Provided by the integrating business (contact data, messages it sends) and by the data subject (replies, keywords, consent).",
            "automated_decision_making": false,
            "rights": ["access", "rectification", "erasure", "restriction", "portability", "objection", "withdraw consent", "lodge a complaint with a supervisory authority"],
        })
    }
}
