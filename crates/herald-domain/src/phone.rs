//! Phone numbers: parsed once at the edge into E.164, then only ever handled as a
//! [`PhoneNumber`], which cannot be printed by accident.

use std::fmt;
use std::str::FromStr;

use phonenumber::Mode;
use phonenumber::country::Id;

/// Longest input we hand to the parser. E.164 has at most 15 digits; 40 characters leave room
/// for spaces, dashes, brackets and a `tel:` prefix, and bound the parser's work.
const MAX_INPUT_LEN: usize = 40;

/// A valid phone number in E.164 form (`+4915112345678`). `Debug` is redacted and there is no
/// `Display`: reading the digits takes an explicit [`PhoneNumber::e164`].
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// The number in E.164 form. Personal data: encrypt it, blind-index it, never log it.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// A number Herald itself stored after [`parse`], read back from authenticated encryption
    /// (so it is byte for byte what was written). Only the E.164 shape is checked: the full
    /// parse is the costliest step of a delivery attempt and proves nothing more here.
    pub(crate) fn from_stored(e164: &str) -> Option<Self> {
        let digits = e164.strip_prefix('+')?;
        let well_formed = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        well_formed.then(|| Self(e164.to_owned()))
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber([REDACTED])")
    }
}

/// The region a number without a leading `+` is read in (ISO 3166-1 alpha-2, e.g. `DE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(Id);

impl FromStr for Region {
    type Err = InvalidRegion;
    fn from_str(code: &str) -> Result<Self, InvalidRegion> {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(InvalidRegion);
        }
        Id::from_str(code).map(Region).map_err(|_| InvalidRegion)
    }
}

impl Region {
    pub fn code(&self) -> &str {
        self.0.as_ref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known ISO 3166-1 alpha-2 region code (e.g. \"DE\")")]
pub struct InvalidRegion;

/// Why a phone number was refused. Messages describe the rule, never the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is too long")]
    TooLong,
    #[error("the phone number has no country code (+…) and no default region is configured")]
    NoCountryCode,
    #[error("not a valid phone number")]
    Invalid,
    #[error("phone numbers with an extension cannot receive messages")]
    Extension,
}

/// Parses and normalises a phone number. `+49 151 1234 5678`, `+49-151-1234-5678` and
/// `+4915112345678` give the same [`PhoneNumber`]. A number without a leading `+` is read in
/// `default_region`, and refused when there is none: guessing a country would message the
/// wrong person.
pub fn parse(input: &str, default_region: Option<Region>) -> Result<PhoneNumber, PhoneError> {
    let input = input.trim();
    if input.len() > MAX_INPUT_LEN {
        return Err(PhoneError::TooLong);
    }
    if !input.bytes().any(|b| b.is_ascii_digit()) {
        return Err(PhoneError::Invalid);
    }
    let international = input.starts_with('+') || input.starts_with("tel:+");
    let region = match (international, default_region) {
        (true, _) => None,
        (false, Some(region)) => Some(region.0),
        (false, None) => return Err(PhoneError::NoCountryCode),
    };
    let number = phonenumber::parse(region, input).map_err(|_| PhoneError::Invalid)?;
    if number.extension().is_some() {
        return Err(PhoneError::Extension);
    }
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid);
    }
    Ok(PhoneNumber(number.format().mode(Mode::E164).to_string()))
}

/// Loads the phone-number metadata now (it is parsed lazily on first use, which would otherwise
/// make the first request after start-up slow).
pub fn warm_up() {
    let _ = parse("+4915112345678", None);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn de() -> Option<Region> {
        Some("DE".parse().unwrap())
    }

    #[test]
    fn stored_numbers_are_read_back_by_shape_only() {
        let parsed = parse("+49 151 1234 5678", None).unwrap();
        assert_eq!(PhoneNumber::from_stored(parsed.e164()), Some(parsed));
        for bad in [
            "4915112345678",
            "+",
            "+0151123456",
            "+49151",
            "+4915112345678901",
            "+49 151 1234",
            "+4915112345678\n",
        ] {
            assert_eq!(PhoneNumber::from_stored(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Whatever `parse` produces, `from_stored` reads back unchanged.
        #[test]
        fn from_stored_accepts_every_parsed_number(national in 100_000_000u64..9_999_999_999u64) {
            if let Ok(number) = parse(&format!("+49{national}"), None) {
                prop_assert_eq!(PhoneNumber::from_stored(number.e164()), Some(number));
            }
        }
    }

    #[test]
    fn spellings_of_one_number_normalise_to_the_same_e164() {
        for spelling in [
            "+49 151 1234 5678",
            "+49-151-1234-5678",
            "+4915112345678",
            " +49 (0)151 12345678 ",
            "tel:+49-151-1234-5678",
        ] {
            assert_eq!(
                parse(spelling, None).unwrap().e164(),
                "+4915112345678",
                "{spelling}"
            );
        }
    }

    #[test]
    fn national_numbers_need_a_default_region() {
        assert_eq!(parse("0151 12345678", None), Err(PhoneError::NoCountryCode));
        assert_eq!(
            parse("0151 12345678", de()).unwrap().e164(),
            "+4915112345678"
        );
        let us: Option<Region> = Some("US".parse().unwrap());
        assert_eq!(parse("(201) 555-0123", us).unwrap().e164(), "+12015550123");
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for bad in ["", "+", "+49", "+49 123", "hello", "+999 1234567"] {
            assert!(parse(bad, de()).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse(&"1".repeat(41), de()), Err(PhoneError::TooLong));
        assert_eq!(
            parse("+1 201 555 0123 ext. 12", None),
            Err(PhoneError::Extension)
        );
    }

    #[test]
    fn debug_is_redacted_and_errors_do_not_echo_input() {
        let number = parse("+4915112345678", None).unwrap();
        assert_eq!(format!("{number:?}"), "PhoneNumber([REDACTED])");
        let err = parse("+49 000 SECRET", None).unwrap_err().to_string();
        assert!(!err.contains("SECRET") && !err.contains("000"));
    }

    #[test]
    fn regions_are_strict() {
        assert!("DE".parse::<Region>().is_ok());
        assert_eq!("de".parse::<Region>(), Err(InvalidRegion));
        assert_eq!("XX".parse::<Region>(), Err(InvalidRegion));
        assert_eq!("DEU".parse::<Region>(), Err(InvalidRegion));
    }

    proptest! {
        /// The parser never panics, and whatever it accepts is canonical E.164 that parses
        /// back to itself.
        #[test]
        fn never_panics_and_output_is_canonical(input in "\\PC{0,45}") {
            if let Ok(number) = parse(&input, de()) {
                let e164 = number.e164();
                prop_assert!(e164.starts_with('+'));
                prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(e164.len() <= 16);
                prop_assert_eq!(parse(e164, None).unwrap(), number);
            }
        }

        #[test]
        fn digit_strings_never_panic(input in "[+0-9 ()-]{0,40}") {
            let _ = parse(&input, de());
            let _ = parse(&input, None);
        }
    }
}
