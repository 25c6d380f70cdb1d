//! Keywords a subject sends to stop, restart or confirm: compared whole-message only, case- and
//! accent-insensitive ("Arrêt", "ARRET" and " stop! " are all the opt-out; "please stop
//! sending me offers" is not — a keyword inside a sentence is a conversation, not an
//! instruction).

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// What a keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Stop,
    Start,
    Confirm,
}

/// Default opt-out words: English, German, French, Spanish, Italian, Dutch, Portuguese.
pub const DEFAULT_STOP: &[&str] = &[
    "STOP",
    "STOPP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "OPT-OUT",
    "ABMELDEN",
    "ABBESTELLEN",
    "ARRET",
    "ARRÊT",
    "DESABONNER",
    "DÉSABONNER",
    "DESINSCRIRE",
    "DÉSINSCRIRE",
    "BAJA",
    "DARSE DE BAJA",
    "CANCELAR",
    "ANNULLA",
    "DISISCRIVIMI",
    "AFMELDEN",
    "UITSCHRIJVEN",
    "PARAR",
    "SAIR",
    "DESCADASTRAR",
];

/// Default re-opt-in words.
pub const DEFAULT_START: &[&str] = &[
    "START",
    "UNSTOP",
    "SUBSCRIBE",
    "ANMELDEN",
    "COMMENCER",
    "ALTA",
    "ISCRIVIMI",
    "AANMELDEN",
    "INSCREVER",
];

/// Default double opt-in confirmation words.
pub const DEFAULT_CONFIRM: &[&str] = &[
    "YES",
    "CONFIRM",
    "JA",
    "BESTÄTIGEN",
    "OUI",
    "CONFIRMER",
    "SÍ",
    "CONFIRMAR",
    "CONFERMO",
    "SIM",
];

/// Upper case, accents removed, surrounding whitespace and punctuation dropped, inner runs of
/// whitespace collapsed to one space.
pub fn normalize(text: &str) -> String {
    // Decompose and drop the marks, upper-case, then once more: compatibility forms can
    // decompose into lower case ("㎏") and upper-casing can produce decomposable letters.
    let fold = |s: &str| -> String {
        s.nfkd()
            .filter(|c| !is_combining_mark(*c))
            .flat_map(char::to_uppercase)
            .collect()
    };
    let folded = fold(&fold(text));
    let trimmed = folded.trim_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | '!' | '¡' | '?' | '¿' | ',' | ';' | '"' | '\'')
    });
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The configured words, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordPolicy {
    stop: HashSet<String>,
    start: HashSet<String>,
    confirm: HashSet<String>,
}

/// Longest message still compared (longer ones are sentences).
const MAX_KEYWORD_CHARS: usize = 40;

impl KeywordPolicy {
    pub fn new<'a>(
        stop: impl IntoIterator<Item = &'a str>,
        start: impl IntoIterator<Item = &'a str>,
        confirm: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        fn set<'a>(words: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
            words
                .into_iter()
                .map(normalize)
                .filter(|w| !w.is_empty())
                .collect()
        }
        Self {
            stop: set(stop),
            start: set(start),
            confirm: set(confirm),
        }
    }

    pub fn defaults() -> Self {
        Self::new(
            DEFAULT_STOP.iter().copied(),
            DEFAULT_START.iter().copied(),
            DEFAULT_CONFIRM.iter().copied(),
        )
    }

    /// What a whole message asks for, if it is one of the words. Stop wins if a word is
    /// configured in more than one list: withdrawing must never fail.
    pub fn classify(&self, text: &str) -> Option<Keyword> {
        if text.chars().count() > MAX_KEYWORD_CHARS {
            return None;
        }
        let word = normalize(text);
        if self.stop.contains(&word) {
            Some(Keyword::Stop)
        } else if self.start.contains(&word) {
            Some(Keyword::Start)
        } else if self.confirm.contains(&word) {
            Some(Keyword::Confirm)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_listed_language_stops_in_any_case_and_accent() {
        let policy = KeywordPolicy::defaults();
        for word in [
            "STOP",
            "stop",
            "Stop",
            " stop ",
            "STOP!",
            "stop.",
            "Stopp",
            "STOPP",
            "abmelden",
            "Abmelden",
            "ARRET",
            "ARRÊT",
            "arrêt",
            "Arrêt",
            "arret",
            "BAJA",
            "baja",
            "Baja!",
            "ANNULLA",
            "annulla",
            "AFMELDEN",
            "afmelden",
            "PARAR",
            "parar",
            "UNSUBSCRIBE",
            "unsubscribe",
            "CANCEL",
            "cancel",
            "désabonner",
            "Darse de baja",
            "darse  de  BAJA",
            "ＳＴＯＰ",
        ] {
            assert_eq!(policy.classify(word), Some(Keyword::Stop), "{word:?}");
        }
    }

    #[test]
    fn a_keyword_inside_a_sentence_is_not_an_opt_out() {
        let policy = KeywordPolicy::defaults();
        for sentence in [
            "Please stop",
            "stop sending me this",
            "Ich möchte mich abmelden",
            "Où est l'arrêt de bus?",
            "No quiero darme de baja",
            "Non annulla il mio ordine",
            "STOP STOP",
            "stopped",
            "bus stop",
            "",
            "   ",
        ] {
            assert_ne!(
                policy.classify(sentence),
                Some(Keyword::Stop),
                "{sentence:?}"
            );
        }
    }

    #[test]
    fn start_and_confirm_words() {
        let policy = KeywordPolicy::defaults();
        for word in ["START", "start", "Anmelden", "alta", "Aanmelden"] {
            assert_eq!(policy.classify(word), Some(Keyword::Start), "{word:?}");
        }
        for word in [
            "YES",
            "yes",
            "Ja",
            "oui",
            "Sí",
            "SI",
            "si!",
            "sim",
            "Bestätigen",
            "BESTATIGEN",
        ] {
            assert_eq!(policy.classify(word), Some(Keyword::Confirm), "{word:?}");
        }
        assert_eq!(policy.classify("yes please"), None);
    }

    #[test]
    fn configured_words_replace_the_defaults_and_stop_wins_a_tie() {
        let policy = KeywordPolicy::new(["HALT", "ENOUGH"], ["AGAIN", "halt"], ["OK"]);
        assert_eq!(policy.classify("halt"), Some(Keyword::Stop));
        assert_eq!(policy.classify("Enough!"), Some(Keyword::Stop));
        assert_eq!(policy.classify("stop"), None);
        assert_eq!(policy.classify("again"), Some(Keyword::Start));
        assert_eq!(policy.classify("ok"), Some(Keyword::Confirm));
    }

    proptest! {
        #[test]
        fn case_and_surrounding_space_never_matter(word in "[A-Za-z]{1,12}", pad in "[ \t]{0,3}") {
            let policy = KeywordPolicy::new([word.as_str()], [], []);
            let variants = [word.to_lowercase(), word.to_uppercase(), format!("{pad}{word}{pad}")];
            for variant in variants {
                prop_assert_eq!(policy.classify(&variant), Some(Keyword::Stop));
            }
        }

        #[test]
        fn normalizing_is_idempotent(text in "\\PC{0,30}") {
            let once = normalize(&text);
            prop_assert_eq!(normalize(&once), once);
        }
    }
}
