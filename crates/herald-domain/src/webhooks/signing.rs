//! Standard Webhooks signatures (`v1`, HMAC-SHA256): what integrators verify with any of the
//! specification's libraries.
//!
//! Signed content: `{webhook-id}.{webhook-timestamp}.{body}` over the exact body bytes sent.
//! Header value: `v1,` + standard base64 (padded) of the tag. Secrets are shown to integrators
//! as `whsec_` + base64 of 32 random bytes.

use std::fmt;

use data_encoding::{BASE64, BASE64_NOPAD};
use herald_crypto::hash::hmac_sha256;
use zeroize::Zeroizing;

const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([REDACTED])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook signing secret (whsec_ followed by base64 of 1 to 64 bytes)")]
pub struct InvalidSecret;

impl SigningSecret {
    pub fn generate() -> Result<Self, herald_crypto::CryptoError> {
        let bytes = herald_crypto::random::bytes::<SECRET_BYTES>()?;
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// Herald generates 32 bytes; shorter secrets are accepted as the specification's
    /// libraries accept them (its test vectors use 23 and 25 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidSecret> {
        if !(1..=64).contains(&bytes.len()) {
            return Err(InvalidSecret);
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// Parses the form shown to integrators; the prefix is optional and padding may be
    /// missing, as the specification's libraries accept.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let trimmed = encoded.trim_end_matches('=');
        // Like the libraries, ignore stray low bits in the last character.
        let mut lenient = BASE64_NOPAD.specification();
        lenient.check_trailing_bits = false;
        let bytes = lenient
            .encoding()
            .map_err(|_| InvalidSecret)?
            .decode(trimmed.as_bytes())
            .map_err(|_| InvalidSecret)?;
        Self::from_bytes(&bytes)
    }

    /// `whsec_…`: shown once, when the endpoint is created.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0)))
    }

    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let tag = hmac_sha256(
            &self.0,
            &[
                webhook_id.as_bytes(),
                b".",
                timestamp.as_bytes(),
                b".",
                body,
            ],
        );
        format!("v1,{}", BASE64.encode(&tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's vectors (reference/standard-webhooks.md §6), shared by its
    /// libraries' test suites.
    #[test]
    fn official_vector_a() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, b""),
            "v1,v48jdbgvh29KJz2Qc+ghw8G6vG3nAKnujWBg8oM/62A="
        );
    }

    #[test]
    fn official_vector_b() {
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        // The suite's negative value for these inputs is not what we produce.
        assert_ne!(
            secret.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU="
        );
    }

    #[test]
    fn unpadded_secrets_are_accepted() {
        let one = SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS").unwrap();
        assert_eq!(
            one.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk="
        );
        let two = SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr").unwrap();
        assert_eq!(
            two.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,yK2tMbA6BHPrMEJ1lLv7UlJJbgFoqGenJkiajZ29evg="
        );
    }

    #[test]
    fn empty_and_malformed_secrets_are_refused() {
        assert_eq!(SigningSecret::parse("").unwrap_err(), InvalidSecret);
        assert_eq!(SigningSecret::parse("whsec_").unwrap_err(), InvalidSecret);
        assert_eq!(
            SigningSecret::parse("whsec_!!!").unwrap_err(),
            InvalidSecret
        );
        assert_eq!(
            SigningSecret::parse(&format!("whsec_{}", "A".repeat(100))).unwrap_err(),
            InvalidSecret,
            "longer than 64 bytes"
        );
    }

    #[test]
    fn generated_secrets_round_trip_and_hide() {
        let secret = SigningSecret::generate().unwrap();
        let shown = secret.reveal();
        assert!(shown.starts_with("whsec_"));
        let parsed = SigningSecret::parse(&shown).unwrap();
        assert_eq!(parsed.expose_bytes(), secret.expose_bytes());
        assert!(!format!("{secret:?}").contains(&shown[6..]));
    }
}
