use proptest::prelude::*;
use serde_json::json;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/whatsapp")
        .join(name);
    std::fs::read(path).unwrap()
}

fn envelope(value: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1093456789012345", "changes": [{"field": "messages", "value": value}]}]
    }))
    .unwrap()
}

fn only(reports: Vec<ProviderReport>) -> ProviderReport {
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.into_iter().next().unwrap()
}

#[test]
fn the_inbound_fixture_parses() {
    let ProviderReport::Inbound(report) = only(parse(&fixture("inbound_text.json")).unwrap())
    else {
        panic!("not inbound");
    };
    assert_eq!(report.from, "+4915112340001");
    assert_eq!(report.at.timestamp(), 1_784_961_000);
    assert_eq!(report.content.kind, "text");
    assert_eq!(
        report.content.text.as_deref(),
        Some("Guten Tag, ist meine Bestellung #20417 schon unterwegs? Grüße")
    );
    assert!(report.provider_message_id.starts_with("wamid."));
}

#[test]
fn the_status_fixtures_parse() {
    let ProviderReport::Status(delivered) = only(parse(&fixture("status_delivered.json")).unwrap())
    else {
        panic!("not a status");
    };
    assert_eq!(delivered.status, MessageStatus::Delivered);
    assert_eq!(delivered.at.timestamp(), 1_784_961_095);
    assert_eq!(delivered.error, None);
    let ProviderReport::Status(failed) = only(parse(&fixture("status_failed.json")).unwrap())
    else {
        panic!("not a status");
    };
    assert_eq!(failed.status, MessageStatus::Failed);
    assert_eq!(
        failed.error,
        Some(MessageError {
            code: "undeliverable".into(),
            provider_code: Some(131026)
        })
    );
}

#[test]
fn batched_callbacks_yield_every_message_and_status() {
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "time": 1751247548, "changes": [
                {"field": "messages", "value": {
                    "messages": [
                        {"from": "4915100000001", "id": "wamid.a", "timestamp": "1700000000", "type": "text", "text": {"body": "one"}},
                        {"from": "4915100000002", "id": "wamid.b", "timestamp": 1700000001, "type": "text", "text": {"body": "two"}}
                    ],
                    "statuses": [
                        {"id": "wamid.x", "status": "sent", "timestamp": "1700000002", "recipient_id": "4915100000003", "biz_opaque_callback_data": "msg_abc"},
                        {"id": "wamid.x", "status": "read", "timestamp": "1700000003", "recipient_id": "4915100000003"}
                    ]
                }},
                {"field": "messages", "value": {"statuses": [
                    {"id": "wamid.y", "status": "delivered", "timestamp": "1700000004"}
                ]}}
            ]},
            {"id": "2", "changes": [
                {"field": "user_preferences", "value": {"user_preferences": [{"wa_id": "4915100000004", "category": "marketing_messages", "value": "stop", "timestamp": 1700000005}]}},
                {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
            ]}
        ]
    }))
    .unwrap();
    let reports = parse(&body).unwrap();
    let inbound = reports
        .iter()
        .filter(|r| matches!(r, ProviderReport::Inbound(_)))
        .count();
    let statuses: Vec<&StatusReport> = reports
        .iter()
        .filter_map(|r| match r {
            ProviderReport::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(inbound, 2);
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses[0].correlation.as_deref(), Some("msg_abc"));
    assert_eq!(statuses[1].status, MessageStatus::Read);
    let ignored: Vec<&str> = reports
        .iter()
        .filter_map(|r| match r {
            ProviderReport::Ignored { what } => Some(what.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ignored, ["field.message_template_status_update"]);
    let preferences: Vec<&PreferenceReport> = reports
        .iter()
        .filter_map(|r| match r {
            ProviderReport::Preference(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(preferences.len(), 1);
    assert_eq!(preferences[0].from, "+4915100000004");
    assert_eq!(preferences[0].preference, Preference::StopMarketing);
}

#[test]
fn marketing_preferences_stop_and_resume_others_are_ignored() {
    let body = |value: &str, category: &str| {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "user_preferences", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1"},
                "contacts": [{"wa_id": "4915100000004", "profile": {"name": "A"}}],
                "user_preferences": [{"wa_id": "4915100000004", "detail": "User requested to stop marketing messages",
                    "category": category, "value": value, "timestamp": "1700000005"}]
            }}]}]
        }))
        .unwrap()
    };
    let one = |value, category| parse(&body(value, category)).unwrap().remove(0);
    assert!(matches!(
        one("stop", "marketing_messages"),
        ProviderReport::Preference(PreferenceReport {
            preference: Preference::StopMarketing,
            ..
        })
    ));
    assert!(matches!(
        one("resume", "marketing_messages"),
        ProviderReport::Preference(PreferenceReport {
            preference: Preference::ResumeMarketing,
            ..
        })
    ));
    assert!(matches!(
        one("signup", "marketing_messages"),
        ProviderReport::Ignored { .. }
    ));
    assert!(matches!(
        one("stop", "other_category"),
        ProviderReport::Ignored { .. }
    ));
}

#[test]
fn every_message_type_of_the_reference_is_understood() {
    let cases = [
        (
            json!({"type": "image", "image": {"id": "m1", "mime_type": "image/jpeg", "sha256": "h", "caption": "look"}}),
            "image",
            Some("look"),
        ),
        (
            json!({"type": "video", "video": {"id": "m2", "mime_type": "video/mp4"}}),
            "video",
            None,
        ),
        (
            json!({"type": "document", "document": {"id": "m3", "filename": "a.pdf", "mime_type": "application/pdf"}}),
            "document",
            None,
        ),
        (
            json!({"type": "audio", "audio": {"id": "m4", "voice": true}}),
            "audio",
            None,
        ),
        (
            json!({"type": "sticker", "sticker": {"id": "m5"}}),
            "sticker",
            None,
        ),
        (
            json!({"type": "location", "location": {"latitude": 52.5, "longitude": 13.4, "name": "Praxis"}}),
            "location",
            None,
        ),
        (
            json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}]}),
            "contacts",
            None,
        ),
        (
            json!({"type": "button", "button": {"payload": "confirm", "text": "Bestätigen"}}),
            "button",
            Some("Bestätigen"),
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "appt_confirm", "title": "Ja"}}}),
            "interactive",
            Some("Ja"),
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Mo", "description": "d"}}}),
            "interactive",
            Some("Mo"),
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{}"}}}),
            "interactive",
            Some("Sent"),
        ),
        (
            json!({"type": "reaction", "reaction": {"message_id": "wamid.q", "emoji": "👍"}}),
            "reaction",
            Some("👍"),
        ),
        (
            json!({"type": "order", "order": {"catalog_id": "c", "text": "bitte", "product_items": []}}),
            "order",
            Some("bitte"),
        ),
        (
            json!({"type": "system", "system": {"body": "changed", "type": "user_changed_number", "wa_id": "49151"}}),
            "system",
            Some("changed"),
        ),
        (
            json!({"type": "unsupported", "errors": [{"code": 131051}], "unsupported": {"type": "poll"}}),
            "unsupported",
            None,
        ),
        (
            json!({"type": "hologram", "hologram": {"depth": 3}}),
            "unsupported",
            None,
        ),
        (
            json!({"type": "revoke", "revoke": {"original_message_id": "wamid.o"}}),
            "revoke",
            None,
        ),
    ];
    for (mut message, kind, body) in cases {
        message["from"] = json!("4915112340001");
        message["id"] = json!("wamid.test");
        message["timestamp"] = json!("1700000000");
        message["context"] = json!({"from": "15550009876", "id": "wamid.ctx"});
        let report = only(parse(&envelope(json!({"messages": [message]}))).unwrap());
        let ProviderReport::Inbound(report) = report else {
            panic!("{kind}: not inbound");
        };
        assert_eq!(report.content.kind, kind);
        assert_eq!(report.content.text.as_deref(), body, "{kind}");
        assert_eq!(
            report.content.details.get("context_id"),
            Some(&json!("wamid.ctx"))
        );
    }
}

#[test]
fn unknown_statuses_fields_and_shapes_are_ignored_not_errors() {
    let body = envelope(json!({
        "future_field": {"x": 1},
        "statuses": [
            {"id": "wamid.p", "status": "played", "timestamp": "1700000000"},
            {"id": "wamid.q", "status": "delivered"},
        ],
        "errors": [{"code": 130429, "title": "Rate limit hit"}],
        "messages": [{"id": "wamid.u", "timestamp": "1700000000", "type": "text", "text": {"body": "x"}, "from_user_id": "US.1"}]
    }));
    let reports = parse(&body).unwrap();
    let whats: Vec<String> = reports
        .into_iter()
        .map(|r| match r {
            ProviderReport::Ignored { what } => what,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        whats,
        [
            "message.without_phone_number",
            "status.played",
            "status.malformed",
            "error.130429"
        ]
    );
    assert_eq!(
        only(parse(br#"{"object":"page","entry":[]}"#).unwrap()),
        ignored("object.other")
    );
    assert!(
        parse(br#"{"object":"whatsapp_business_account","entry":[]}"#)
            .unwrap()
            .is_empty()
    );
    assert!(parse(b"not json").is_err());
}

#[test]
fn a_missing_from_is_taken_from_the_single_contact() {
    let body = envelope(json!({
        "contacts": [{"profile": {"name": "K"}, "wa_id": "4915112340001", "user_id": "US.1"}],
        "messages": [{"id": "wamid.u", "timestamp": "1700000000", "type": "text", "text": {"body": "x"}, "from_user_id": "US.1"}]
    }));
    let ProviderReport::Inbound(report) = only(parse(&body).unwrap()) else {
        panic!("not inbound");
    };
    assert_eq!(report.from, "+4915112340001");
}

proptest! {
    /// Whatever arrives, parsing answers (never panics); JSON always parses to reports.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&body);
    }

    #[test]
    fn arbitrary_json_shapes_are_accepted(kind in "[a-z_]{1,12}", status in "[a-z]{1,10}",
                                          ts in prop_oneof![Just(json!("1700000000")), Just(json!(1700000000)), Just(json!(null)), Just(json!("x"))]) {
        let body = envelope(json!({
            "messages": [{"from": "4915112340001", "id": "wamid.1", "timestamp": ts, "type": kind}],
            "statuses": [{"id": "wamid.2", "status": status, "timestamp": ts}]
        }));
        let reports = parse(&body).unwrap();
        prop_assert_eq!(reports.len(), 2);
    }
}
