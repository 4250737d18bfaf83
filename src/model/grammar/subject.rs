//! The subject of a request for a picture: the words of the user's message that a call's
//! text argument should copy ("could u whip up a picture of **a lighthouse in a
//! thunderstorm**"). Decoding holds a call's free-text argument to them
//! ([`crate::model::generate::SamplingParams::subject_bias`]): a model of a few minutes'
//! training writes a well-formed call but fills it with a subject it was trained on ("a
//! lighthouse on the sand" for a fox wearing a scarf).
//!
//! A noun phrase is found by its first word, in English and Spanish:
//! - a determiner ("a", "two", "una") whose next words are not a picture noun ("a
//!   watercolor", "una ilustración" name the picture, not its subject), or any word right
//!   after a picture noun and "of"/"de" ("a watercolor of **cherry** blossoms");
//! - ranked by what comes before it: a picture noun and "of"/"de" first, then a picture
//!   verb, a picture noun or ":" ("Draw me **a frog**", "an image: **two cats**"); the
//!   first of equals wins, so a phrase inside the subject ("a frog painting **a fence**")
//!   does not.
//!
//! The subject runs to the end of its sentence, or to a ", please" / ", por favor".
//! Measured on the training set's 960 templated requests, whose calls hold the subject as
//! written: the subject found holds every word of the call's for 959. Word lists, not a
//! parser: a request in another style gets the model's own choice, with the weaker
//! [`crate::model::generate::SamplingParams::span_bias`].

use std::ops::Range;

use crate::text::fold;

/// Words that open a noun phrase.
const DETERMINERS: &[&str] = &[
    "a", "an", "two", "three", "some", "un", "una", "unos", "unas", "dos", "tres",
];

/// Nouns that name the picture rather than what it shows (folded).
const PICTURE_NOUNS: &[&str] = &[
    "picture",
    "image",
    "illustration",
    "drawing",
    "photo",
    "pic",
    "wallpaper",
    "poster",
    "watercolor",
    "watercolour",
    "portrait",
    "sketch",
    "artwork",
    "logo",
    "caricature",
    "dibujo",
    "imagen",
    "ilustracion",
    "foto",
    "fondo",
    "acuarela",
    "retrato",
    "caricatura",
    "cuadro",
    "pintura",
    "animado",
];

/// Beginnings of the verbs that ask for a picture (folded): "draw", "dibújame", "píntame".
const PICTURE_VERBS: &[&str] = &[
    "draw",
    "sketch",
    "paint",
    "render",
    "visualiz",
    "illustrat",
    "produc",
    "generat",
    "creat",
    "show",
    "imagin",
    "dibuj",
    "pint",
    "ilustr",
    "muestr",
    "genera",
    "crea",
    "disen",
    "plasm",
    "haz",
    "dame",
];

/// "of" between a picture noun and its subject.
const OF: &[&str] = &["of", "de"];

/// Pronouns between a verb and its object ("draw me a frog").
const OBJECT_PRONOUNS: &[&str] = &["me", "us", "nos"];

/// What ends a subject after its sentence: a plea.
const PLEAS: &[&str] = &[", please", ", por favor", " please", " por favor"];

/// The byte range of `message` that holds the subject of its request for a picture, if a
/// noun phrase is found (see the module's documentation).
pub fn of(message: &str) -> Option<Range<usize>> {
    // (byte offset, folded word); ":" is a word of its own.
    let words: Vec<(usize, String)> = word_spans(message).map(|(at, w)| (at, fold(w))).collect();
    // "logo-style" names a picture too.
    let picture = |w: &str| {
        PICTURE_NOUNS.contains(&w) || w.split('-').any(|part| PICTURE_NOUNS.contains(&part))
    };
    let verb = |w: &str| PICTURE_VERBS.iter().any(|v| w.starts_with(v));
    // (rank, word index)
    let mut best: Option<(u8, usize)> = None;
    for (i, (_, w)) in words.iter().enumerate() {
        let before = |k: usize| i.checked_sub(k).map_or("", |j| words[j].1.as_str());
        let after_picture_of = OF.contains(&before(1)) && picture(before(2));
        let names_picture = words[i + 1..].iter().take(2).any(|(_, n)| picture(n));
        if !(after_picture_of || DETERMINERS.contains(&w.as_str()) && !names_picture) {
            continue;
        }
        let rank = if after_picture_of {
            2
        } else if before(1) == ":"
            || picture(before(1))
            || verb(before(1))
            || OBJECT_PRONOUNS.contains(&before(1)) && verb(before(2))
        {
            1
        } else {
            0
        };
        if best.is_none_or(|(r, _)| rank > r) {
            best = Some((rank, i));
        }
    }
    let start = words[best?.1].0;
    let end = start + subject_end(&message[start..]);
    (end > start).then_some(start..end)
}

/// Where the subject that starts `text` ends: at its sentence's end or a plea.
fn subject_end(text: &str) -> usize {
    let folded = text.to_lowercase();
    let plea = PLEAS.iter().filter_map(|p| folded.find(p)).min();
    let sentence = text.find(['.', '?', '!', ';']);
    let end = [plea, sentence]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    text[..end].trim_end().len()
}

/// The words of `text` (letters, digits, `'` and `-` inside them) and each ":", with
/// their byte offsets.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let inside = c.is_alphanumeric() || (start.is_some() && matches!(c, '\'' | '-'));
        match (inside, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
        if c == ':' {
            out.push((i, ":"));
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(message: &str) -> Option<&str> {
        of(message).map(|r| &message[r])
    }

    #[test]
    fn the_subject_is_the_noun_phrase_a_picture_is_asked_of() {
        assert_eq!(
            subject("could u whip up a picture of a lighthouse in a thunderstorm"),
            Some("a lighthouse in a thunderstorm")
        );
        assert_eq!(
            subject("Draw me a frog painting a fence, please."),
            Some("a frog painting a fence")
        );
        assert_eq!(
            subject("Hazme una acuarela de flores de cerezo. Gracias"),
            Some("flores de cerezo")
        );
        assert_eq!(
            subject("Para mi cuento, ¿me dibujas un erizo con sombrero?"),
            Some("un erizo con sombrero")
        );
        assert_eq!(subject("an image: two cats"), Some("two cats"));
    }

    #[test]
    fn a_phrase_before_the_request_is_not_its_subject() {
        assert_eq!(
            subject("I'm making a birthday card, so I need an illustration of a unicorn."),
            Some("a unicorn")
        );
    }

    #[test]
    fn a_message_without_a_noun_phrase_has_no_subject() {
        assert_eq!(subject("hello there"), None);
        assert_eq!(subject(""), None);
        assert_eq!(subject("¿qué tal?"), None);
    }
}
