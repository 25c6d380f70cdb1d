//! Webhook payloads (reference §3): every entry, change, message and status of a (possibly
//! batched) callback, tolerant of unknown types and fields — what Herald does not understand is
//! reported as ignored or `unsupported`, never as an error. Only a body that is not JSON at all
//! is refused.

use std::collections::BTreeMap;

use chrono::DateTime;
use herald_domain::clock::Timestamp;
use herald_domain::consent::Preference;
use herald_domain::messages::reports::PreferenceReport;
use herald_domain::messages::{
    CallbackError, CallbackParser, InboundContent, InboundReport, MessageError, MessageStatus,
    ProviderReport, StatusReport,
};
use serde_json::{Map, Value};

use crate::errors::status_failure_code;

/// Parses WhatsApp Cloud API callbacks for one business number: changes whose
/// `metadata.phone_number_id` names another number are reported as
/// [`ProviderReport::ForeignNumber`] (a shared Meta app, a misrouted subscription), never acted
/// on. Without a number (`Default`), every change is accepted — for parsing tests only.
#[derive(Debug, Default)]
pub struct WhatsappCallbacks {
    phone_number_id: Option<String>,
}

impl WhatsappCallbacks {
    pub fn new(phone_number_id: &str) -> Self {
        Self {
            phone_number_id: Some(phone_number_id.to_owned()),
        }
    }
}

pub const PROVIDER: &str = "whatsapp";

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Timestamps come as strings of Unix seconds on messages and statuses, as numbers elsewhere.
fn timestamp(value: &Value) -> Option<Timestamp> {
    let seconds = match value.get("timestamp")? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds, 0)
}

fn ignored(what: impl Into<String>) -> ProviderReport {
    ProviderReport::Ignored { what: what.into() }
}

fn status(value: &Value) -> ProviderReport {
    let (Some(id), Some(name), Some(at)) =
        (text(value, "id"), text(value, "status"), timestamp(value))
    else {
        return ignored("status.malformed");
    };
    let status = match name {
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" => MessageStatus::Failed,
        // `played`, `deleted`, and whatever comes next.
        other => return ignored(format!("status.{}", sanitize(other))),
    };
    let error = (status == MessageStatus::Failed).then(|| {
        let provider_code = list(value, "errors")
            .first()
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        MessageError {
            code: status_failure_code(provider_code).to_owned(),
            provider_code,
        }
    });
    ProviderReport::Status(StatusReport {
        provider_message_id: id.to_owned(),
        correlation: text(value, "biz_opaque_callback_data").map(str::to_owned),
        status,
        at,
        error,
    })
}

/// Only identifier-like names go into logs and counts (never content).
fn sanitize(name: &str) -> String {
    name.chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn copy(details: &mut BTreeMap<String, Value>, from: &Value, keys: &[&str], prefix: &str) {
    for key in keys {
        if let Some(value) = from.get(*key)
            && !value.is_null()
        {
            details.insert(format!("{prefix}{key}"), value.clone());
        }
    }
}

/// What an inbound message says, by type (reference §3.3, "Inbound message object").
fn content(message: &Value) -> InboundContent {
    let kind = text(message, "type").unwrap_or("unsupported");
    let object = message
        .get(kind)
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let mut details = BTreeMap::new();
    let mut body = None;
    let kind = match kind {
        "text" => {
            body = text(&object, "body").map(str::to_owned);
            "text"
        }
        "image" | "video" | "document" | "audio" | "sticker" => {
            body = text(&object, "caption").map(str::to_owned);
            copy(
                &mut details,
                &object,
                &["id", "mime_type", "sha256", "filename", "voice"],
                "media_",
            );
            kind
        }
        "location" => {
            copy(
                &mut details,
                &object,
                &["latitude", "longitude", "name", "address", "url"],
                "",
            );
            "location"
        }
        "contacts" => {
            let count = message
                .get("contacts")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            details.insert(
                "contacts".to_owned(),
                message.get("contacts").cloned().unwrap_or(Value::Null),
            );
            details.insert("count".to_owned(), Value::from(count));
            "contacts"
        }
        "button" => {
            body = text(&object, "text").map(str::to_owned);
            copy(&mut details, &object, &["payload"], "button_");
            "button"
        }
        "interactive" => {
            let reply_type = text(&object, "type").unwrap_or("unknown");
            details.insert("reply_type".to_owned(), Value::from(sanitize(reply_type)));
            if let Some(reply) = object.get(reply_type) {
                copy(
                    &mut details,
                    reply,
                    &["id", "title", "description", "name", "response_json"],
                    "reply_",
                );
                body = text(reply, "title")
                    .or_else(|| text(reply, "body"))
                    .map(str::to_owned);
            }
            "interactive"
        }
        "reaction" => {
            body = text(&object, "emoji").map(str::to_owned);
            copy(&mut details, &object, &["message_id"], "reacted_to_");
            "reaction"
        }
        "order" => {
            body = text(&object, "text").map(str::to_owned);
            copy(
                &mut details,
                &object,
                &["catalog_id", "product_items"],
                "order_",
            );
            "order"
        }
        "system" => {
            body = text(&object, "body").map(str::to_owned);
            copy(&mut details, &object, &["type", "wa_id"], "system_");
            "system"
        }
        "revoke" | "edit" => {
            copy(&mut details, &object, &["original_message_id"], "");
            if let Some(edited) = object.get("message") {
                body = text(edited, "text")
                    .or_else(|| edited.get("text").and_then(|t| text(t, "body")))
                    .map(str::to_owned);
            }
            kind
        }
        other => {
            details.insert("original_type".to_owned(), Value::from(sanitize(other)));
            if let Some(code) = list(message, "errors").first().and_then(|e| e.get("code")) {
                details.insert("error_code".to_owned(), code.clone());
            }
            "unsupported"
        }
    };
    if let Some(context) = message.get("context") {
        copy(
            &mut details,
            context,
            &["id", "forwarded", "frequently_forwarded"],
            "context_",
        );
    }
    if let Some(referral) = message.get("referral") {
        details.insert("referral".to_owned(), referral.clone());
    }
    InboundContent {
        kind: kind.to_owned(),
        text: body,
        details,
    }
}

fn inbound(message: &Value, value: &Value) -> ProviderReport {
    let (Some(id), Some(at)) = (text(message, "id"), timestamp(message)) else {
        return ignored("message.malformed");
    };
    // `from` may be absent where only a business-scoped user id is given: then the sender's
    // contact entry may still carry the number.
    let from = text(message, "from").or_else(|| {
        let contacts = list(value, "contacts");
        let user = text(message, "from_user_id");
        contacts
            .iter()
            .find(|c| user.is_some() && text(c, "user_id") == user)
            .or(if contacts.len() == 1 {
                contacts.first()
            } else {
                None
            })
            .and_then(|c| text(c, "wa_id"))
    });
    let Some(from) =
        from.filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit() || b == b'+'))
    else {
        return ignored("message.without_phone_number");
    };
    let from = if from.starts_with('+') {
        from.to_owned()
    } else {
        format!("+{from}")
    };
    ProviderReport::Inbound(InboundReport {
        provider_message_id: id.to_owned(),
        from,
        at,
        content: content(message),
    })
}

/// A marketing preference (`user_preferences`, reference §3): `stop` is the subject's own
/// opt-out through WhatsApp's controls (later marketing sends would fail with 131050);
/// `resume` undoes it. Other categories and values are ignored.
fn preference(value: &Value) -> ProviderReport {
    let category = text(value, "category").unwrap_or("");
    if category != "marketing_messages" {
        return ignored(format!("user_preferences.{}", sanitize(category)));
    }
    let preference = match text(value, "value") {
        Some("stop") => Preference::StopMarketing,
        Some("resume") => Preference::ResumeMarketing,
        other => {
            return ignored(format!(
                "user_preferences.{}",
                sanitize(other.unwrap_or(""))
            ));
        }
    };
    let Some(wa_id) = text(value, "wa_id")
        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit() || b == b'+'))
    else {
        return ignored("user_preferences.without_phone_number");
    };
    let Some(at) = timestamp(value) else {
        return ignored("user_preferences.malformed");
    };
    let from = if wa_id.starts_with('+') {
        wa_id.to_owned()
    } else {
        format!("+{wa_id}")
    };
    ProviderReport::Preference(PreferenceReport {
        from,
        at,
        preference,
    })
}

/// Every report in one callback body (any business number).
pub fn parse(body: &[u8]) -> Result<Vec<ProviderReport>, CallbackError> {
    parse_for(body, None)
}

/// Whether a change's value is for `ours` (no number configured: any).
fn for_us(value: &Value, ours: Option<&str>) -> bool {
    match ours {
        None => true,
        Some(ours) => {
            value
                .get("metadata")
                .and_then(|m| text(m, "phone_number_id"))
                == Some(ours)
        }
    }
}

/// Every report in one callback body; those for another business number than `ours` become
/// [`ProviderReport::ForeignNumber`], one per report they carried.
pub fn parse_for(body: &[u8], ours: Option<&str>) -> Result<Vec<ProviderReport>, CallbackError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|_| CallbackError { provider: PROVIDER })?;
    let mut reports = Vec::new();
    if text(&root, "object") != Some("whatsapp_business_account") {
        reports.push(ignored("object.other"));
        return Ok(reports);
    }
    for entry in list(&root, "entry") {
        for change in list(entry, "changes") {
            let field = text(change, "field").unwrap_or("");
            let Some(value) = change.get("value") else {
                reports.push(ignored("change.without_value"));
                continue;
            };
            if matches!(field, "messages" | "user_preferences") && !for_us(value, ours) {
                let carried = list(value, "messages").len()
                    + list(value, "statuses").len()
                    + list(value, "user_preferences").len();
                reports.extend(std::iter::repeat_n(
                    ProviderReport::ForeignNumber,
                    carried.max(1),
                ));
                continue;
            }
            if field == "user_preferences" {
                for p in list(value, "user_preferences") {
                    reports.push(preference(p));
                }
                continue;
            }
            if field != "messages" {
                // message_template_status_update, account notices, echoes…
                reports.push(ignored(format!("field.{}", sanitize(field))));
                continue;
            }
            for message in list(value, "messages") {
                reports.push(inbound(message, value));
            }
            for s in list(value, "statuses") {
                reports.push(status(s));
            }
            for error in list(value, "errors") {
                let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
                reports.push(ignored(format!("error.{code}")));
            }
        }
    }
    Ok(reports)
}

/// The body without what it says about `e164` (see [`CallbackParser::redact`]).
#[allow(clippy::option_option)]
pub fn redact(body: &[u8], e164: &str) -> Option<Option<Vec<u8>>> {
    let Ok(mut root) = serde_json::from_slice::<Value>(body) else {
        // Unreadable: it cannot be shown not to mention the number.
        return Some(None);
    };
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    let theirs = |v: Option<&str>| {
        v.is_some_and(|n| n.chars().filter(char::is_ascii_digit).collect::<String>() == digits)
    };
    let mut removed = false;
    let mut left = 0usize;
    let entries = root
        .get_mut("entry")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut kept_entries = Vec::with_capacity(entries.len());
    for mut entry in entries {
        if let Some(changes) = entry.get_mut("changes").and_then(Value::as_array_mut) {
            for change in changes.iter_mut() {
                let Some(value) = change.get_mut("value").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (key, who) in [
                    ("messages", "from"),
                    ("contacts", "wa_id"),
                    ("statuses", "recipient_id"),
                    ("user_preferences", "wa_id"),
                ] {
                    if let Some(items) = value.get_mut(key).and_then(Value::as_array_mut) {
                        let before = items.len();
                        items.retain(|item| !theirs(text(item, who)));
                        removed |= items.len() != before;
                        if key != "contacts" {
                            left += items.len();
                        }
                    }
                }
            }
        }
        kept_entries.push(entry);
    }
    if let Some(object) = root.as_object_mut() {
        object.insert("entry".to_owned(), Value::Array(kept_entries));
    }
    if !removed {
        return None;
    }
    if left == 0 {
        return Some(None);
    }
    Some(serde_json::to_vec(&root).ok())
}

impl CallbackParser for WhatsappCallbacks {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<ProviderReport>, CallbackError> {
        parse_for(body, self.phone_number_id.as_deref())
    }

    fn redact(&self, body: &[u8], e164: &str) -> Option<Option<Vec<u8>>> {
        redact(body, e164)
    }
}

#[cfg(test)]
#[path = "callback_tests.rs"]
mod tests;
