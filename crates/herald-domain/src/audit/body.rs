//! An entry's canonical text written straight from the event, without building a JSON tree
//! first: every send writes one, and the tree plus its key sorting was about 8 % of a send's
//! instructions. The output is byte-for-byte `chain::canonical(&event.json(time))` — a property
//! test below holds the two together, so the chain's hashes and outside verifiers
//! (`tools/verify_audit.py`) see no difference.

use std::fmt::Write as _;

use chrono::SecondsFormat;

use super::chain::write_string;
use super::event::{Actor, AuditEvent, Detail, Target};
use crate::clock::Timestamp;

fn object(out: &mut String, fields: &[(&str, &str)]) {
    // `fields` are given in sorted key order.
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_string(value, out);
    }
    out.push('}');
}

fn actor(actor: &Actor, out: &mut String) {
    match actor {
        Actor::Integration {
            integration_id,
            key_id,
        } => object(
            out,
            &[
                ("integration_id", integration_id.as_str()),
                ("key_id", key_id.as_str()),
                ("type", "integration"),
            ],
        ),
        Actor::OAuthClient {
            integration_id,
            client_id,
            token_id,
        } => object(
            out,
            &[
                ("client_id", client_id.as_str()),
                ("integration_id", integration_id.as_str()),
                ("token_id", token_id.as_str()),
                ("type", "oauth_client"),
            ],
        ),
        Actor::Admin => object(out, &[("type", "admin"), ("via", "cli")]),
        Actor::Subject(id) => object(out, &[("id", id.as_str()), ("type", "subject")]),
        Actor::System => object(out, &[("type", "system")]),
        Actor::Anonymous => object(out, &[("type", "anonymous")]),
    }
}

fn target(target: Option<&Target>, out: &mut String) {
    let Some(target) = target else {
        out.push_str("null");
        return;
    };
    let (kind, id) = target.parts();
    match id {
        Some(id) => object(out, &[("id", id), ("type", kind)]),
        None => object(out, &[("type", kind)]),
    }
}

fn detail(value: &Detail, out: &mut String) {
    match value {
        Detail::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Detail::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Detail::Code(c) => write_string(c, out),
        Detail::Codes(codes) => {
            out.push('[');
            for (i, c) in codes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(c, out);
            }
            out.push(']');
        }
        Detail::Id(s)
        | Detail::Route(s)
        | Detail::Digest(s)
        | Detail::Name(s)
        | Detail::Network(s) => {
            write_string(s, out);
        }
        Detail::Time(t) => write_string(&t.to_rfc3339_opts(SecondsFormat::Millis, true), out),
    }
}

/// `canonical(event.json(time))`, written directly. Top-level keys in sorted order: action,
/// actor, details, outcome, request_id, target, time.
pub(crate) fn canonical_body(event: &AuditEvent, time: Timestamp) -> String {
    let mut out = String::with_capacity(384);
    out.push_str("{\"action\":");
    write_string(event.action.as_str(), &mut out);
    out.push_str(",\"actor\":");
    actor(&event.actor, &mut out);
    out.push_str(",\"details\":{");
    // A BTreeMap of `&str` iterates in byte order: the canonical key order.
    for (i, (key, value)) in event.details.entries().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, &mut out);
        out.push(':');
        detail(value, &mut out);
    }
    out.push_str("},\"outcome\":");
    write_string(event.outcome.as_str(), &mut out);
    out.push_str(",\"request_id\":");
    match &event.request_id {
        Some(id) => write_string(id.as_str(), &mut out),
        None => out.push_str("null"),
    }
    out.push_str(",\"target\":");
    target(event.target.as_ref(), &mut out);
    out.push_str(",\"time\":");
    write_string(&time.to_rfc3339_opts(SecondsFormat::Millis, true), &mut out);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::audit::chain::canonical;
    use crate::audit::event::{Action, Details, Initiator, Outcome, RequestId};
    use crate::ids::{
        AccessTokenId, ApiKeyId, IntegrationId, MessageId, OAuthClientId, SubjectId,
        WebhookEndpointId,
    };

    fn actors() -> impl Strategy<Value = Actor> {
        prop_oneof![
            Just(Actor::Admin),
            Just(Actor::System),
            Just(Actor::Anonymous),
            Just(Actor::Subject(SubjectId::generate().unwrap())),
            Just(Actor::Integration {
                integration_id: IntegrationId::generate().unwrap(),
                key_id: ApiKeyId::generate().unwrap(),
            }),
            Just(Actor::OAuthClient {
                integration_id: IntegrationId::generate().unwrap(),
                client_id: OAuthClientId::generate().unwrap(),
                token_id: AccessTokenId::generate().unwrap(),
            }),
        ]
    }

    fn targets() -> impl Strategy<Value = Option<Target>> {
        prop_oneof![
            Just(None),
            Just(Some(Target::Subject(SubjectId::generate().unwrap()))),
            Just(Some(Target::Message(MessageId::generate().unwrap()))),
            Just(Some(Target::WebhookEndpoint(
                WebhookEndpointId::generate().unwrap()
            ))),
            Just(Some(Target::OAuthClient(
                OAuthClientId::generate().unwrap()
            ))),
            Just(Some(Target::AccessToken(
                AccessTokenId::generate().unwrap()
            ))),
            Just(Some(Target::OAuthSigningKeys)),
            Just(Some(Target::AuditTrail)),
            Just(Some(Target::Service)),
            Just(Some(Target::RootKey)),
        ]
    }

    const KEYS: [&str; 8] = [
        "a", "attempt", "code", "Zed", "found", "purpose", "x_y", "reason",
    ];

    fn details() -> impl Strategy<Value = Details> {
        let value = prop_oneof![
            any::<bool>().prop_map(Detail::Bool),
            any::<i64>().prop_map(Detail::Int),
            Just(Detail::Code("legal_hold")),
            Just(Detail::Codes(vec!["messages:send", "admin"])),
            // Any text, so escaping is compared too (names are validated elsewhere).
            ".{0,12}".prop_map(Detail::Name),
            (0i64..4_000_000_000_000)
                .prop_map(|ms| { Detail::Time(Utc.timestamp_millis_opt(ms).unwrap()) }),
        ];
        proptest::collection::vec((0..KEYS.len(), value), 0..6).prop_map(|pairs| {
            pairs
                .into_iter()
                .fold(Details::new(), |d, (k, v)| d.with(KEYS[k], v))
        })
    }

    proptest! {
        #[test]
        fn the_direct_writer_equals_the_canonical_form_of_the_json(
            actor in actors(),
            target in targets(),
            details in details(),
            outcome in prop_oneof![Just(Outcome::Success), Just(Outcome::Failure), Just(Outcome::Denied)],
            with_request in any::<bool>(),
            ms in 0i64..4_000_000_000_000,
        ) {
            let initiator = Initiator::new(
                actor,
                with_request
                    .then(|| RequestId::parse("req_0123456789abcdef"))
                    .flatten(),
            );
            let mut event = AuditEvent::new(&initiator, Action::ConsentChanged, outcome).details(details);
            event.target = target;
            let time = Utc.timestamp_millis_opt(ms).unwrap();
            prop_assert_eq!(canonical_body(&event, time), canonical(&event.json(time)));
        }
    }
}
