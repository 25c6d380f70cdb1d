//! Subjects: create-or-find by phone number, look-up, read (API.md; compliance.md GDPR-5.1c,
//! GDPR-32-PSEUDO).

use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::{TestApp, assert_problem, epoch, json};

#[tokio::test]
async fn spellings_of_one_number_are_one_subject() {
    let app = TestApp::spawn().await;
    let (_, key) = app
        .integration_with_key("shop", &["subjects:write", "subjects:read"])
        .await;
    let first = app
        .post("/v1/subjects", &key, &json!({"phone": "+49 151 1234 5678"}))
        .await;
    assert_eq!(first.status(), 201);
    let id = json(first).await["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sub_") && id.len() == 30);
    for spelling in [
        "+49-151-1234-5678",
        "+4915112345678",
        "tel:+49-151-12345678",
    ] {
        let again = app
            .post("/v1/subjects", &key, &json!({"phone": spelling}))
            .await;
        assert_eq!(again.status(), 200, "{spelling}");
        assert_eq!(json(again).await["id"], id.as_str(), "{spelling}");
    }
    let other = app
        .post("/v1/subjects", &key, &json!({"phone": "+4915112345679"}))
        .await;
    assert_eq!(other.status(), 201);
    assert_ne!(json(other).await["id"], id.as_str());
}

#[tokio::test]
async fn a_subject_reads_back_without_contact_data() {
    let app = TestApp::spawn().await;
    let id = json(
        app.post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let subject = app.get(&format!("/v1/subjects/{id}"), &app.admin_key).await;
    assert_eq!(subject.status(), 200);
    let subject = json(subject).await;
    assert_eq!(
        subject,
        json!({
            "id": id,
            "created_at": epoch().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "restricted": false,
            "restricted_at": null,
            "legal_hold": false,
            "rectified_at": null,
            "whatsapp": {"last_inbound_at": null}
        })
    );
    // Internally the number is there, decryptable by Herald only.
    let phone = app
        .herald
        .subjects()
        .phone(&id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(phone.e164(), "+4915112345678");
}

#[tokio::test]
async fn unknown_or_malformed_subject_ids_are_404() {
    let app = TestApp::spawn().await;
    for id in [
        "sub_00000000000000000000000000",
        "sub_nope",
        "int_00000000000000000000000000",
        "%2B4915112345678",
    ] {
        let response = app.get(&format!("/v1/subjects/{id}"), &app.admin_key).await;
        let problem = assert_problem(response, 404, "not_found").await;
        assert!(!problem.to_string().contains("4915112345678"));
    }
}

#[tokio::test]
async fn lookup_finds_by_any_spelling_and_404s_otherwise() {
    let app = TestApp::spawn().await;
    let (_, reader) = app.integration_with_key("crm", &["subjects:read"]).await;
    let missing = app
        .post(
            "/v1/subjects/lookup",
            &reader,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    assert_problem(missing, 404, "not_found").await;
    let id = json(
        app.post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await,
    )
    .await["id"]
        .clone();
    // Another integration's subject is not the reader's to find: the same 404 as an unknown
    // number.
    let withheld = app
        .post(
            "/v1/subjects/lookup",
            &reader,
            &json!({"phone": "+49 (151) 1234-5678"}),
        )
        .await;
    let withheld = assert_problem(withheld, 404, "not_found").await;
    let missing_again = app
        .post(
            "/v1/subjects/lookup",
            &reader,
            &json!({"phone": "+4915112340000"}),
        )
        .await;
    let missing_again = assert_problem(missing_again, 404, "not_found").await;
    for field in ["type", "title", "status", "code"] {
        assert_eq!(withheld[field], missing_again[field], "{field}");
    }
    // A caller that may register the number finds it by any spelling, and is linked by it.
    let (_, writer) = app
        .integration_with_key("shop", &["subjects:read", "subjects:write"])
        .await;
    let found = app
        .post(
            "/v1/subjects/lookup",
            &writer,
            &json!({"phone": "+49 (151) 1234-5678"}),
        )
        .await;
    assert_eq!(found.status(), 200);
    assert_eq!(json(found).await["id"], id);
    let id = id.as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/subjects/{id}"), &writer)
            .await
            .status(),
        200
    );
    assert_problem(
        app.get(&format!("/v1/subjects/{id}"), &reader).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn invalid_numbers_are_422_invalid_phone_number_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let cases = [
        ("0151 12345678", "no country code"),
        ("+49 123", "not a valid phone number"),
        ("hello", "not a valid phone number"),
        ("+999 1234567", "not a valid phone number"),
        ("+1 201 555 0123 ext. 7", "extension"),
        ("+4915112345678901234567890123456789012345", "too long"),
    ];
    for (phone, rule) in cases {
        for path in ["/v1/subjects", "/v1/subjects/lookup"] {
            let response = app
                .post(path, &app.admin_key, &json!({"phone": phone}))
                .await;
            let problem = assert_problem(response, 422, "invalid_phone_number").await;
            assert_eq!(problem["errors"][0]["field"], "phone");
            let message = problem["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(rule), "{phone}: {message}");
            assert!(
                !problem.to_string().contains(phone),
                "the input is echoed: {problem}"
            );
        }
    }
    let raw = app.raw_database_bytes().await;
    assert!(!raw.windows(9).any(|w| w == b"151123456"));
}

#[tokio::test]
async fn national_numbers_are_read_in_the_default_region() {
    let app = TestApp::spawn_with(|c| c.default_region = Some("DE".into())).await;
    let national = json(
        app.post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "0151 12345678"}),
        )
        .await,
    )
    .await;
    let international = app
        .post(
            "/v1/subjects",
            &app.admin_key,
            &json!({"phone": "+4915112345678"}),
        )
        .await;
    assert_eq!(international.status(), 200);
    assert_eq!(json(international).await["id"], national["id"]);
}

#[tokio::test]
async fn concurrent_registrations_of_one_number_create_one_subject() {
    let app = TestApp::spawn().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let request = app
                .request(reqwest::Method::POST, "/v1/subjects", &app.admin_key)
                .json(&json!({"phone": "+33612345678"}));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (
                    status,
                    json(response).await["id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for task in tasks {
        let (status, id) = task.await.unwrap();
        match status {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        ids.insert(id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
}
