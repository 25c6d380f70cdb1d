//! `X-Hub-Signature-256`: `sha256=` + lowercase hex HMAC-SHA256 of the raw body under the app
//! secret. Checked over the bytes as received, in constant time, before anything parses them.

use data_encoding::HEXLOWER_PERMISSIVE;
use herald_crypto::hash::hmac_sha256_verify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is malformed")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// For the audit trail.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

/// Meta signs the escaped-unicode form of a payload (`\u00e9`, lowercase hex, surrogate pairs).
/// Its deliveries are already in that form; a relay that unescaped them would not be, so a
/// failed check on a body with non-ASCII bytes is tried once more on the escaped form.
fn escape_non_ascii(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 2);
    for c in body.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Verifies `header` (the `X-Hub-Signature-256` value) for `body` under `app_secret`.
pub fn verify(app_secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let tag = HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| SignatureError::Malformed)?;
    if hmac_sha256_verify(app_secret, body, &tag) {
        return Ok(());
    }
    if !body.is_ascii()
        && let Ok(text) = std::str::from_utf8(body)
        && hmac_sha256_verify(app_secret, escape_non_ascii(text).as_bytes(), &tag)
    {
        return Ok(());
    }
    Err(SignatureError::Mismatch)
}

/// The GET handshake's token check, in constant time.
pub fn verify_token_matches(configured: &str, given: &str) -> bool {
    // Compare digests: equal length whatever was given, so timing says nothing.
    let a = herald_crypto::hash::sha256(&[configured.as_bytes()]);
    let b = herald_crypto::hash::sha256(&[given.as_bytes()]);
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        difference |= x ^ y;
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_reference_worked_example_verifies() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = "sha256=eb4b54cb68820a953c6ac314910c47e62f8e1b39bbda1006514617140c6d3870";
        assert_eq!(verify(b"example-app-secret", Some(header), body), Ok(()));
        assert_eq!(
            verify(b"another-secret", Some(header), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_escaped_unicode_form_is_accepted_as_a_fallback() {
        // whatsapp-api-js's vector: the HMAC of the escaped form of this text.
        let body = "Let's pretend this body is equal to the message object and can handle unicode characters like みどりいろ and J'ai mangé des pâtes";
        let header = "sha256=0363007aabdf1ab579f35936651a460fb5fa1aaf40df98b1264446b72cc96688";
        assert_eq!(
            verify(b"YOUR_APP_SECRET", Some(header), body.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn the_fixtures_verify_with_their_documented_signatures() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/whatsapp");
        for (file, signature) in [
            (
                "inbound_text.json",
                "sha256=f567a400337090793951801e3d8c1fd70e872160b399901bf41998bb8208f240",
            ),
            (
                "status_delivered.json",
                "sha256=2f1a19d59d464a5b3c7d472a864ebfebdc7f19ddbac3439776235567ca7c482e",
            ),
            (
                "status_failed.json",
                "sha256=8fbef4df66e7ceafa244c500404cef0b8468446de0bc43ebeb923604dda06fb1",
            ),
        ] {
            let body = std::fs::read(fixtures.join(file)).unwrap();
            assert_eq!(
                verify(b"herald-dev-app-secret", Some(signature), &body),
                Ok(()),
                "{file}"
            );
            // One byte more (or less) and it fails.
            let mut changed = body.clone();
            changed.push(b' ');
            assert_eq!(
                verify(b"herald-dev-app-secret", Some(signature), &changed),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let body = b"{}";
        assert_eq!(verify(b"s", None, body), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s", Some("md5=abc"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s", Some("sha256=abc"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s", Some(&format!("sha256={}", "z".repeat(64))), body),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn verify_tokens_compare_exactly() {
        assert!(verify_token_matches("token-1", "token-1"));
        assert!(!verify_token_matches("token-1", "token-2"));
        assert!(!verify_token_matches("token-1", ""));
    }

    proptest! {
        /// Any body signed with the secret verifies; any other secret does not.
        #[test]
        fn signatures_round_trip(body in proptest::collection::vec(any::<u8>(), 0..512),
                                 secret in "[a-z0-9]{8,40}") {
            let tag = herald_crypto::hash::hmac_sha256(secret.as_bytes(), &[&body]);
            let header = format!("sha256={}", data_encoding::HEXLOWER.encode(&tag));
            prop_assert_eq!(verify(secret.as_bytes(), Some(&header), &body), Ok(()));
            let wrong = format!("{secret}x");
            prop_assert!(verify(wrong.as_bytes(), Some(&header), &body).is_err());
        }
    }
}
