//! What a person asks THAU to remember in conversation: "Remember that the library opens
//! at nine", "Recuerda que mi perro se llama Toby". [`lesson`] finds the fact in such a
//! message; the chat turn stores it in long-term memory at once (so the next answer can
//! use it) and confirms in the message's language ([`Lesson::confirmation`]).

use crate::text::fold;

/// The language a lesson was given in (the confirmation answers in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

/// Openings that ask THAU to remember what follows, folded ([`fold`]: lower case, no
/// accents). Longer ones first, so "please remember that" wins over "remember".
const OPENINGS: &[(&str, Lang)] = &[
    ("please remember that ", Lang::En),
    ("please remember: ", Lang::En),
    ("remember that ", Lang::En),
    ("remember: ", Lang::En),
    ("keep in mind that ", Lang::En),
    ("don't forget that ", Lang::En),
    ("por favor recuerda que ", Lang::Es),
    ("por favor, recuerda que ", Lang::Es),
    ("recuerda que ", Lang::Es),
    ("recuerda esto: ", Lang::Es),
    ("recuerda: ", Lang::Es),
    ("acuerdate de que ", Lang::Es),
    ("acuerdate que ", Lang::Es),
    ("ten en cuenta que ", Lang::Es),
    ("no olvides que ", Lang::Es),
];

/// Words that may come before an opening: the model's name, a greeting.
const LEAD_INS: &[&str] = &[
    "thau, ", "thau: ", "thau ", "hey, ", "oye, ", "ok, ", "vale, ",
];

/// Fewest characters a fact may have.
const MIN_FACT_CHARS: usize = 3;

/// A fact to remember, found in a chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    /// The fact as a sentence: first letter upper-case, ending in a full stop unless it
    /// ends in other closing punctuation.
    pub fact: String,
    pub lang: Lang,
}

impl Lesson {
    /// The reply that says what was stored.
    pub fn confirmation(&self) -> String {
        match self.lang {
            Lang::En => format!("I will remember that: {}", self.fact),
            Lang::Es => format!("Lo recordaré: {}", self.fact),
        }
    }
}

/// The fact a message asks THAU to remember, or `None` when it asks no such thing (a
/// question, such as "remember that song?", is not a lesson).
pub fn lesson(message: &str) -> Option<Lesson> {
    let mut rest = message.trim();
    while let Some(after) = LEAD_INS.iter().find_map(|l| strip_folded(rest, l)) {
        rest = after.trim_start();
    }
    let (fact, lang) = OPENINGS
        .iter()
        .find_map(|(o, lang)| strip_folded(rest, o).map(|f| (f, *lang)))?;
    let fact = fact.trim();
    if fact.chars().count() < MIN_FACT_CHARS || fact.ends_with('?') {
        return None;
    }
    let mut chars = fact.chars();
    let first = chars.next()?;
    let mut fact: String = first.to_uppercase().chain(chars).collect();
    if !fact.ends_with(['.', '!', '…', '"', ')']) {
        fact.push('.');
    }
    Some(Lesson { fact, lang })
}

/// `text` after `opening` when it starts with it, compared folded (case and accents
/// ignored); the rest keeps its own spelling.
fn strip_folded<'a>(text: &'a str, opening: &str) -> Option<&'a str> {
    let mut want = opening.chars().peekable();
    for (at, c) in text.char_indices() {
        if want.peek().is_none() {
            return Some(&text[at..]);
        }
        for f in fold(&c.to_string()).chars() {
            // A typographic apostrophe reads as a plain one.
            let f = if f == '’' { '\'' } else { f };
            if want.next() != Some(f) {
                return None;
            }
        }
    }
    want.peek().is_none().then_some("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_to_remember_gives_its_fact_in_either_language() {
        let l = lesson("Remember that the library opens at nine").unwrap();
        assert_eq!(
            (l.fact.as_str(), l.lang),
            ("The library opens at nine.", Lang::En)
        );
        let l = lesson("  Recuerda que mi perro se llama Toby.").unwrap();
        assert_eq!(
            (l.fact.as_str(), l.lang),
            ("Mi perro se llama Toby.", Lang::Es)
        );
        // Accents and case do not matter in the opening; the fact keeps its spelling.
        let l = lesson("ACUÉRDATE DE QUE el código es 4812").unwrap();
        assert_eq!(l.fact, "El código es 4812.");
        let l = lesson("thau, please remember: Ana’s birthday is on 3 May!").unwrap();
        assert_eq!(l.fact, "Ana’s birthday is on 3 May!");
        let l = lesson("Oye, no olvides que el vuelo sale a las 7").unwrap();
        assert_eq!(
            (l.fact.as_str(), l.lang),
            ("El vuelo sale a las 7.", Lang::Es)
        );
        assert_eq!(
            lesson("recuerda que hoy es lunes").unwrap().confirmation(),
            "Lo recordaré: Hoy es lunes."
        );
    }

    #[test]
    fn questions_and_other_messages_are_not_lessons() {
        for m in [
            "Do you remember that song?",
            "remember that time we met?",
            "What do you remember?",
            "¿Recuerdas que te lo dije?",
            "remember that ",
            "recuerda que ok",
            "recordar que es bueno",
            "",
            "the rememberer",
        ] {
            assert_eq!(lesson(m), None, "{m:?}");
        }
    }
}
