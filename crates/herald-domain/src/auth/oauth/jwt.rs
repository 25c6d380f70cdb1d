//! The JWTs of OAuth 2.0: Herald's access tokens (RFC 9068, signed with Herald's Ed25519 key)
//! and the assertions clients authenticate with (RFC 7523, signed with the client's own
//! Ed25519 or P-256 key). Signing and verification are `jsonwebtoken`'s (on ring); what is
//! checked, and in which order, is ours.
//!
//! Refusals are deliberately coarse: the caller learns only that a token is not valid. Every
//! check that can fail without cryptography (shape, length, header, algorithm, key id) runs
//! before a signature is verified, so garbage costs almost nothing.

use std::collections::HashSet;

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use herald_crypto::hash::sha256;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::Timestamp;

/// The `typ` header of access tokens (RFC 9068 §2.1); `application/at+jwt` is the same type.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Longest JWT considered at all: Herald's tokens are about 600 bytes; a client's assertion
/// has no reason to be longer.
pub const MAX_JWT_LEN: usize = 4096;
/// How far a token's `iat`/`nbf` may lie ahead of this node's clock: the clocks of several
/// nodes (and of a client signing an assertion) are never exactly in step. Expiry has no
/// leeway.
pub const CLOCK_LEEWAY_SECS: i64 = 30;
/// An assertion may be valid for at most this long. It is single-use whatever its lifetime
/// (its `jti` is remembered until `exp`), so the bound limits the replay memory, not the
/// danger of a leak; one hour is what common client libraries (authlib's default) and other
/// authorization servers (Okta) use, so integrators' libraries work unchanged.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
const MAX_JTI_LEN: usize = 256;

/// Why a JWT was refused; for logs and the audit trail, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("wrong token type")]
    Type,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature or claims")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("lifetime too long")]
    TooLong,
}

/// Whether a bearer credential has the shape of a compact JWS: three base64url segments.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() <= MAX_JWT_LEN
        && token.bytes().filter(|b| *b == b'.').count() == 2
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The claims of a Herald access token (RFC 9068 §2.2), plus the integration the client
/// belongs to, so a request is attributed without a database read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The client: with client credentials the client is the subject (RFC 9068 §2.2).
    pub sub: String,
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub integration_id: String,
}

/// A key id: the first 8 bytes of the public key's SHA-256, in hex.
pub fn key_id_of(public_key: &[u8]) -> String {
    HEXLOWER.encode(&sha256(&[public_key])[..8])
}

/// The key that signs access tokens.
pub struct TokenSigningKey {
    kid: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigningKey {
    /// From the PKCS#8 document of an Ed25519 key.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Self {
        Self {
            kid,
            encoding: EncodingKey::from_ed_der(pkcs8),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

/// A key that verifies access tokens: the active one and, after a rotation, the previous one
/// until its last token has expired.
#[derive(Clone)]
pub struct TokenVerifyingKey {
    kid: String,
    public_key: Vec<u8>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenVerifyingKey {
    pub fn new(kid: String, public_key: Vec<u8>) -> Self {
        let decoding = DecodingKey::from_ed_der(&public_key);
        Self {
            kid,
            public_key,
            decoding,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (RFC 8037), as `/oauth/jwks.json` lists it.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": BASE64URL_NOPAD.encode(&self.public_key),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

fn spec_claims(names: &[&str]) -> HashSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks an access token's header, signature, issuer and audience. Time is checked by the
/// caller ([`check_times`]) against its own clock.
pub fn verify_access_token(
    token: &str,
    keys: &[TokenVerifyingKey],
    issuer: &str,
    audience: &str,
) -> Result<AccessClaims, JwtRefusal> {
    if !looks_like_jwt(token) {
        return Err(JwtRefusal::Malformed);
    }
    // `alg: none` and unknown algorithms do not even parse as a header.
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Malformed)?;
    // Only EdDSA: an HMAC "signed" with the public key (the classic confusion attack) or any
    // other family is refused before a key is chosen.
    if header.alg != Algorithm::EdDSA {
        return Err(JwtRefusal::Algorithm);
    }
    let typ = header.typ.as_deref().unwrap_or("");
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(JwtRefusal::Type);
    }
    let kid = header.kid.as_deref().ok_or(JwtRefusal::UnknownKey)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(JwtRefusal::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims = spec_claims(&["exp", "iat", "iss", "aud", "sub", "jti"]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
        .map_err(|_| JwtRefusal::Invalid)?;
    if data.claims.sub != data.claims.client_id {
        return Err(JwtRefusal::Invalid);
    }
    Ok(data.claims)
}

/// Checks `exp` (strictly), `iat` and `nbf` (with [`CLOCK_LEEWAY_SECS`]) against `now`.
pub fn check_times(
    now: Timestamp,
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
) -> Result<(), JwtRefusal> {
    let now = now.timestamp();
    if exp <= now {
        return Err(JwtRefusal::Expired);
    }
    let latest_start = now + CLOCK_LEEWAY_SECS;
    if iat.is_some_and(|t| t > latest_start) || nbf.is_some_and(|t| t > latest_start) {
        return Err(JwtRefusal::NotYetValid);
    }
    Ok(())
}

/// A client's public key (a JWK without any private member), registered for
/// `private_key_jwt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientJwk {
    Ed25519 {
        x: String,
        kid: Option<String>,
    },
    P256 {
        x: String,
        y: String,
        kid: Option<String>,
    },
}

fn coordinate(value: &Value, name: &str) -> Result<String, &'static str> {
    let text = value
        .get(name)
        .and_then(Value::as_str)
        .ok_or("a public key coordinate is missing")?;
    match BASE64URL_NOPAD.decode(text.as_bytes()) {
        Ok(bytes) if bytes.len() == 32 => Ok(text.to_owned()),
        _ => Err("a key coordinate must be 32 bytes in unpadded base64url"),
    }
}

impl ClientJwk {
    /// Accepts an Ed25519 (`OKP`) or P-256 (`EC`) public key. A JWK carrying private members
    /// is refused: a client that sends its private key has leaked it.
    pub fn parse(value: &Value) -> Result<Self, &'static str> {
        let object = value
            .as_object()
            .ok_or("the key must be a JSON object (a JWK)")?;
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if object.contains_key(private) {
                return Err("the key contains private material: send the public key only");
            }
        }
        let kid = match object.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= 128 => Some(kid.clone()),
            Some(_) => return Err("kid must be a string of 1 to 128 characters"),
        };
        let kty = object.get("kty").and_then(Value::as_str);
        let crv = object.get("crv").and_then(Value::as_str);
        let alg = object.get("alg").and_then(Value::as_str);
        let jwk = match (kty, crv) {
            (Some("OKP"), Some("Ed25519")) => ClientJwk::Ed25519 {
                x: coordinate(value, "x")?,
                kid,
            },
            (Some("EC"), Some("P-256")) => ClientJwk::P256 {
                x: coordinate(value, "x")?,
                y: coordinate(value, "y")?,
                kid,
            },
            _ => return Err("only Ed25519 (kty OKP) and P-256 (kty EC) keys are accepted"),
        };
        if let Some(alg) = alg
            && alg != jwk.algorithm_name()
        {
            return Err("alg does not match the key type");
        }
        if let Some(usage) = object.get("use")
            && usage != "sig"
        {
            return Err("use must be sig");
        }
        Ok(jwk)
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            ClientJwk::Ed25519 { .. } => Algorithm::EdDSA,
            ClientJwk::P256 { .. } => Algorithm::ES256,
        }
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self {
            ClientJwk::Ed25519 { .. } => "EdDSA",
            ClientJwk::P256 { .. } => "ES256",
        }
    }

    /// The JWK as stored and listed (public members only).
    pub fn to_json(&self) -> Value {
        let mut value = match self {
            ClientJwk::Ed25519 { x, .. } => json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            ClientJwk::P256 { x, y, .. } => json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
        };
        let kid = match self {
            ClientJwk::Ed25519 { kid, .. } | ClientJwk::P256 { kid, .. } => kid,
        };
        if let (Some(kid), Some(object)) = (kid, value.as_object_mut()) {
            object.insert("kid".to_owned(), Value::String(kid.clone()));
        }
        value
    }

    fn decoding_key(&self) -> Result<DecodingKey, JwtRefusal> {
        match self {
            ClientJwk::Ed25519 { x, .. } => DecodingKey::from_ed_components(x),
            ClientJwk::P256 { x, y, .. } => DecodingKey::from_ec_components(x, y),
        }
        .map_err(|_| JwtRefusal::Invalid)
    }
}

/// What a verified client assertion says: its id (for replay detection) and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    pub exp: i64,
}

#[derive(Deserialize)]
struct AssertionClaims {
    jti: String,
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Issuer {
    iss: Option<String>,
}

/// The `iss` of an assertion, read without verifying it: only to find which client's key
/// verifies it.
pub fn assertion_issuer(assertion: &str) -> Option<String> {
    if !looks_like_jwt(assertion) {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?;
    serde_json::from_slice::<Issuer>(&bytes).ok()?.iss
}

/// Verifies a client assertion (RFC 7523 §3): signature by the client's key, `iss` and `sub`
/// the client id, `aud` the token endpoint (or the issuer), a `jti`, and a short lifetime.
pub fn verify_assertion(
    assertion: &str,
    jwk: &ClientJwk,
    client_id: &str,
    audiences: &[&str],
    now: Timestamp,
) -> Result<VerifiedAssertion, JwtRefusal> {
    if !looks_like_jwt(assertion) {
        return Err(JwtRefusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| JwtRefusal::Malformed)?;
    if header.alg != jwk.algorithm() {
        return Err(JwtRefusal::Algorithm);
    }
    let mut validation = Validation::new(jwk.algorithm());
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_audience(audiences);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims = spec_claims(&["exp", "iss", "sub", "aud", "jti"]);
    let data =
        jsonwebtoken::decode::<AssertionClaims>(assertion, &jwk.decoding_key()?, &validation)
            .map_err(|_| JwtRefusal::Invalid)?;
    let claims = data.claims;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(JwtRefusal::Invalid);
    }
    check_times(now, claims.exp, claims.iat, claims.nbf)?;
    if claims.exp > now.timestamp() + MAX_ASSERTION_LIFETIME_SECS + CLOCK_LEEWAY_SECS {
        return Err(JwtRefusal::TooLong);
    }
    Ok(VerifiedAssertion {
        jti: claims.jti,
        exp: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use herald_crypto::signing::SigningKey;

    use super::*;

    fn key() -> (TokenSigningKey, TokenVerifyingKey) {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let kid = key_id_of(key.public_key());
        (
            TokenSigningKey::from_pkcs8(kid.clone(), &pkcs8),
            TokenVerifyingKey::new(kid, key.public_key().to_vec()),
        )
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://herald.example".into(),
            aud: "https://herald.example".into(),
            sub: "ocl_x".into(),
            client_id: "ocl_x".into(),
            scope: "messages:send".into(),
            jti: "tok_y".into(),
            iat: 1_000,
            exp: 1_600,
            integration_id: "int_z".into(),
        }
    }

    fn b64(value: &Value) -> String {
        BASE64URL_NOPAD.encode(value.to_string().as_bytes())
    }

    #[test]
    fn a_signed_token_verifies_and_its_claims_round_trip() {
        let (signer, verifier) = key();
        let token = signer.sign(&claims()).unwrap();
        assert!(looks_like_jwt(&token));
        let verified = verify_access_token(
            &token,
            &[verifier],
            "https://herald.example",
            "https://herald.example",
        )
        .unwrap();
        assert_eq!(verified, claims());
    }

    #[test]
    fn wrong_issuer_audience_key_or_tampering_is_refused() {
        let (signer, verifier) = key();
        let (_, other) = key();
        let token = signer.sign(&claims()).unwrap();
        let iss = "https://herald.example";
        let keys = std::slice::from_ref(&verifier);
        assert_eq!(
            verify_access_token(&token, keys, "https://other", iss),
            Err(JwtRefusal::Invalid)
        );
        assert_eq!(
            verify_access_token(&token, keys, iss, "https://other"),
            Err(JwtRefusal::Invalid)
        );
        assert_eq!(
            verify_access_token(&token, &[other], iss, iss),
            Err(JwtRefusal::UnknownKey)
        );
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut changed = claims();
        changed.scope = "admin".into();
        parts[1] = b64(&serde_json::to_value(&changed).unwrap());
        assert_eq!(
            verify_access_token(&parts.join("."), keys, iss, iss),
            Err(JwtRefusal::Invalid)
        );
    }

    #[test]
    fn none_and_hmac_algorithms_and_other_types_are_refused() {
        let (signer, verifier) = key();
        let token = signer.sign(&claims()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let iss = "https://herald.example";
        let keys = std::slice::from_ref(&verifier);
        let none = format!(
            "{}.{payload}.",
            b64(&json!({"alg": "none", "typ": "at+jwt", "kid": verifier.kid()}))
        );
        assert!(verify_access_token(&none, keys, iss, iss).is_err());
        // HS256 keyed with the public key: the algorithm-confusion attack.
        let header = b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": verifier.kid()}));
        let signed = format!("{header}.{payload}");
        let tag = herald_crypto::hash::hmac_sha256(&verifier.public_key, &[signed.as_bytes()]);
        let hs = format!("{signed}.{}", BASE64URL_NOPAD.encode(&tag));
        assert_eq!(
            verify_access_token(&hs, keys, iss, iss),
            Err(JwtRefusal::Algorithm)
        );
        let header = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": verifier.kid()}));
        let jwt = format!("{header}.{payload}.{}", token.split('.').nth(2).unwrap());
        assert_eq!(
            verify_access_token(&jwt, keys, iss, iss),
            Err(JwtRefusal::Type)
        );
        assert_eq!(
            verify_access_token("hk_abc", keys, iss, iss),
            Err(JwtRefusal::Malformed)
        );
    }

    #[test]
    fn times_expiry_is_strict_and_the_start_has_leeway() {
        let at = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(check_times(at(1_000), 1_600, Some(1_000), None), Ok(()));
        assert_eq!(
            check_times(at(1_600), 1_600, Some(1_000), None),
            Err(JwtRefusal::Expired)
        );
        assert_eq!(check_times(at(1_000), 1_600, Some(1_030), None), Ok(()));
        assert_eq!(
            check_times(at(1_000), 1_600, Some(1_031), None),
            Err(JwtRefusal::NotYetValid)
        );
        assert_eq!(
            check_times(at(1_000), 1_600, None, Some(1_100)),
            Err(JwtRefusal::NotYetValid)
        );
    }

    #[test]
    fn client_keys_must_be_public_ed25519_or_p256() {
        let x = BASE64URL_NOPAD.encode(&[7u8; 32]);
        let ok = ClientJwk::parse(&json!({"kty": "OKP", "crv": "Ed25519", "x": x})).unwrap();
        assert_eq!(ok.algorithm_name(), "EdDSA");
        assert_eq!(ClientJwk::parse(&ok.to_json()).unwrap(), ok);
        let ec = json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "kid": "k1"});
        assert_eq!(ClientJwk::parse(&ec).unwrap().algorithm_name(), "ES256");
        for bad in [
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": x}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "oct", "k": x}),
            json!({"kty": "EC", "crv": "P-384", "x": x, "y": x}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "short"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "HS256"}),
            json!({"kty": "EC", "crv": "P-256", "x": x}),
            json!("not an object"),
        ] {
            assert!(ClientJwk::parse(&bad).is_err(), "{bad}");
        }
    }
}
