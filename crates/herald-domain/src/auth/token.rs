//! API key tokens: `hk_` followed by 256 random bits in lowercase base32hex (52 characters).
//!
//! The format is checked before any database look-up, so garbage costs nothing, and the `hk_`
//! prefix lets secret scanners recognise a leaked Herald key.

use std::fmt;

use data_encoding::BASE32_DNSSEC;
use herald_crypto::{CryptoError, random};
use secrecy::{ExposeSecret, SecretString};

pub const TOKEN_PREFIX: &str = "hk_";
const TOKEN_BYTES: usize = 32;
const TOKEN_BODY_LEN: usize = 52;
/// Characters of the body shown in listings to tell keys apart (40 of 256 bits).
const DISPLAY_CHARS: usize = 8;

/// A bearer token. Shown once, at creation; `Debug` never prints it.
pub struct ApiToken(SecretString);

/// `prefix` and 256 random bits in lowercase base32hex: the form of every Herald secret a
/// caller presents (API keys `hk_`, OAuth client secrets `hcs_`).
pub(crate) fn random_secret(prefix: &str) -> Result<SecretString, CryptoError> {
    let bytes = zeroize::Zeroizing::new(random::bytes::<TOKEN_BYTES>()?);
    let mut token = String::with_capacity(prefix.len() + TOKEN_BODY_LEN);
    token.push_str(prefix);
    BASE32_DNSSEC.encode_append(bytes.as_ref(), &mut token);
    Ok(SecretString::from(token))
}

/// Whether `token` has the form [`random_secret`] gives with this prefix.
pub(crate) fn well_formed_secret(prefix: &str, token: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|body| {
        body.len() == TOKEN_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
    })
}

impl ApiToken {
    pub fn generate() -> Result<Self, CryptoError> {
        random_secret(TOKEN_PREFIX).map(Self)
    }

    /// The token itself, to hand to the operator once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The public, non-secret beginning of the token (`hk_1a2b3c4d`), for listings.
    pub fn display_prefix(&self) -> String {
        self.expose()[..TOKEN_PREFIX.len() + DISPLAY_CHARS].to_owned()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([REDACTED])")
    }
}

/// Whether a presented bearer token has the shape of a Herald API key.
pub(crate) fn well_formed(token: &str) -> bool {
    well_formed_secret(TOKEN_PREFIX, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = ApiToken::generate().unwrap();
        let b = ApiToken::generate().unwrap();
        assert!(well_formed(a.expose()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 55);
        assert!(a.expose().starts_with(&a.display_prefix()));
        assert_eq!(a.display_prefix().len(), 11);
        assert_eq!(format!("{a:?}"), "ApiToken([REDACTED])");
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        let good = ApiToken::generate().unwrap();
        let body = &good.expose()[3..];
        for bad in [
            String::new(),
            body.to_owned(),
            format!("hk-{body}"),
            format!("hk_{}", &body[1..]),
            format!("hk_{body}0"),
            format!("hk_{}", body.to_uppercase()),
            format!("hk_{}z", &body[1..]),
        ] {
            assert!(!well_formed(&bad), "{bad}");
        }
    }
}
