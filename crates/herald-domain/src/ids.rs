//! Typed, prefixed, random identifiers (`sub_…`, `int_…`, `key_…`).
//!
//! 128 random bits from the OS CSPRNG, written in lowercase base32hex (26 characters), so an id
//! reveals nothing — not the creation time, not a counter, not the person it stands for. Ids
//! are pseudonyms: they are what logs, metrics and the audit trail carry instead of personal data.

use std::fmt;

use data_encoding::BASE32_DNSSEC;
use herald_crypto::{CryptoError, random};

const RANDOM_BYTES: usize = 16;
const ENCODED_LEN: usize = 26;

/// A string that is not a well-formed id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
}

fn encode(prefix: &str) -> Result<String, CryptoError> {
    let bytes = random::bytes::<RANDOM_BYTES>()?;
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    BASE32_DNSSEC.encode_append(&bytes, &mut out);
    Ok(out)
}

/// An id whose first 48 bits are the creation time in milliseconds and the other 80 random:
/// still unguessable, but sorting (and database B-trees) follow creation order, so inserts
/// append instead of scattering writes across the index. For records whose creation time is
/// not secret (messages, events); people's ids stay fully random.
fn encode_ordered(prefix: &str, now_millis: i64) -> Result<String, CryptoError> {
    let mut bytes = [0u8; RANDOM_BYTES];
    let millis = u64::try_from(now_millis).unwrap_or(0).to_be_bytes();
    bytes[..6].copy_from_slice(&millis[2..]);
    random::fill(&mut bytes[6..])?;
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    BASE32_DNSSEC.encode_append(&bytes, &mut out);
    Ok(out)
}

fn well_formed(prefix: &str, value: &str) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == ENCODED_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
                && BASE32_DNSSEC.decode(body.as_bytes()).is_ok()
        })
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Result<Self, CryptoError> {
                encode($prefix).map(Self)
            }

            /// A fresh id ordered by creation time (see [`encode_ordered`]).
            pub fn generate_ordered(now: crate::clock::Timestamp) -> Result<Self, CryptoError> {
                encode_ordered($prefix, now.timestamp_millis()).map(Self)
            }

            /// Accepts only a well-formed id of this kind.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if well_formed($prefix, value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Self::parse(value)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A data subject: the pseudonym for one person (one phone number).
    SubjectId, "sub", "subject"
);
prefixed_id!(
    /// An integration: one connected system (a shop, an EHR, a CRM) with its own credentials.
    IntegrationId, "int", "integration"
);
prefixed_id!(
    /// An API key (the id, not the secret).
    ApiKeyId, "key", "API key"
);
prefixed_id!(
    /// An OAuth 2.0 client of an integration (the `client_id`; never the secret).
    OAuthClientId, "ocl", "OAuth client"
);
prefixed_id!(
    /// An OAuth 2.0 access token's id (its `jti`): names the token in the audit trail and in
    /// revocations; it does not let anyone use the token.
    AccessTokenId, "tok", "access token"
);
prefixed_id!(
    /// A message, outbound (sent by an integration) or inbound (from a subject).
    MessageId, "msg", "message"
);
prefixed_id!(
    /// An integration's webhook endpoint.
    WebhookEndpointId, "whk", "webhook endpoint"
);
prefixed_id!(
    /// An event delivered to integrations' webhook endpoints.
    EventId, "evt", "event"
);
prefixed_id!(
    /// A provider callback as received (a webhook body from WhatsApp, a sandbox reply), held
    /// until processed.
    CallbackId, "cb", "provider callback"
);
prefixed_id!(
    /// One event of the consent ledger (a grant, a request, a withdrawal, an expiry).
    ConsentEventId, "cev", "consent event"
);
prefixed_id!(
    /// A data-subject rights request in the register.
    RightsRequestId, "dsr", "rights request"
);
prefixed_id!(
    /// A security incident in the incident register (a possible personal-data breach).
    IncidentId, "inc", "incident"
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = SubjectId::generate().unwrap();
        assert!(id.as_str().starts_with("sub_"));
        assert_eq!(id.as_str().len(), 4 + ENCODED_LEN);
        assert_eq!(SubjectId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn ordered_ids_sort_by_time_and_stay_unique() {
        let t = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let a = MessageId::generate_ordered(t(1_900_000_000_000)).unwrap();
        let b = MessageId::generate_ordered(t(1_900_000_000_001)).unwrap();
        let c = MessageId::generate_ordered(t(1_900_000_000_001)).unwrap();
        assert!(a < b && a < c);
        assert_ne!(b, c);
        assert_eq!(MessageId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn ids_are_unique() {
        let a = ApiKeyId::generate().unwrap();
        let b = ApiKeyId::generate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_prefix_or_shape_is_refused() {
        let id = SubjectId::generate().unwrap();
        let body = &id.as_str()[4..];
        for bad in [
            format!("int_{body}"),
            format!("sub{body}"),
            format!("sub_{}", &body[1..]),
            format!("sub_{body}a"),
            format!("sub_{}", body.to_uppercase()),
            format!("sub_{}w", &body[1..]),
            String::new(),
        ] {
            assert_eq!(
                SubjectId::parse(&bad),
                Err(InvalidId { kind: "subject" }),
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let id = IntegrationId::generate().unwrap();
        let json = format!("\"{id}\"");
        let back: IntegrationId = serde_json_like(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json_like::<IntegrationId>("\"int_nope\"").is_err());
    }

    // A tiny JSON string reader, so the domain crate needs no serde_json for one test.
    fn serde_json_like<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
        use serde::de::IntoDeserializer;
        let inner = json.trim_matches('"').to_owned();
        let de: serde::de::value::StringDeserializer<serde::de::value::Error> =
            inner.into_deserializer();
        T::deserialize(de).map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_only_accepts_well_formed(s in "\\PC{0,40}") {
            if SubjectId::parse(&s).is_ok() {
                prop_assert!(s.starts_with("sub_") && s.len() == 30);
            }
        }
    }
}
