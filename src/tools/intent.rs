//! The intent fallback: finds image requests in what a *user* wrote ("genera una imagen de
//! un desierto", "dibuja un gato", "draw a fox", "an image of the sea") for a model too
//! young to write tool calls itself, and turns them into a `generate_image` call.
//!
//! Matching works on whole words, lowercased and with accents folded ("dibújame" matches
//! "dibujame"), so a trigger never eats part of a word: the seed's prefix stripping turned
//! "desierto" into "sierto"; here the subject is the original text after the trigger's last
//! word, accents and all. Verbs ("draw", "dibuja") count only at the start of the request or
//! after a polite opening ("can you", "¿puedes", "please", "por favor"); phrases ending in
//! "of"/"de" ("an image of", "una foto de") count anywhere.

use serde_json::json;

use super::ToolCall;

/// Imperative triggers, valid at the start of a request.
const VERBS: &[&str] = &[
    "draw",
    "paint",
    "sketch",
    "illustrate",
    "dibuja",
    "dibujame",
    "dibujar",
    "dibujarme",
    "dibujas",
    "pinta",
    "pintame",
    "pintar",
    "pintas",
    "ilustra",
    "generate an image of",
    "generate a picture of",
    "create an image of",
    "create a picture of",
    "make an image of",
    "make a picture of",
    "show me an image of",
    "show me a picture of",
    "genera una imagen de",
    "generar una imagen de",
    "crear una imagen de",
    "hacer un dibujo de",
    "generame una imagen de",
    "crea una imagen de",
    "creame una imagen de",
    "haz una imagen de",
    "hazme una imagen de",
    "hazme un dibujo de",
    "haz un dibujo de",
    "muestrame una imagen de",
    "generate an image",
    "genera una imagen",
];

/// Noun phrases that ask for a picture wherever they appear.
const PHRASES: &[&str] = &[
    "an image of",
    "a picture of",
    "a photo of",
    "a drawing of",
    "a painting of",
    "an illustration of",
    "una imagen de",
    "una foto de",
    "una fotografia de",
    "un dibujo de",
    "una pintura de",
    "una ilustracion de",
];

/// Openings that may come before a verb.
const POLITE: &[&str] = &[
    "please",
    "can you",
    "could you",
    "would you",
    "will you",
    "i want you to",
    "por favor",
    "puedes",
    "podrias",
    "quiero que",
    "me",
];

/// A word of the input: folded form and where it lies in the original text.
struct Word {
    folded: String,
    start: usize,
    end: usize,
}

fn fold(c: char) -> char {
    match c {
        'á' | 'à' | 'ä' | 'â' => 'a',
        'é' | 'è' | 'ë' | 'ê' => 'e',
        'í' | 'ì' | 'ï' | 'î' => 'i',
        'ó' | 'ò' | 'ö' | 'ô' => 'o',
        'ú' | 'ù' | 'ü' | 'û' => 'u',
        other => other,
    }
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut cur: Option<Word> = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            let w = cur.get_or_insert(Word {
                folded: String::new(),
                start: i,
                end: i,
            });
            w.folded.extend(c.to_lowercase().map(fold));
            w.end = i + c.len_utf8();
        } else if let Some(w) = cur.take() {
            out.push(w);
        }
    }
    out.extend(cur);
    out
}

/// Whether `pattern` (space-separated folded words) matches `ws` at `at`; its length.
fn matches_at(ws: &[Word], at: usize, pattern: &str) -> Option<usize> {
    let p: Vec<&str> = pattern.split(' ').collect();
    (ws.len() >= at + p.len()
        && ws[at..at + p.len()]
            .iter()
            .zip(&p)
            .all(|(w, p)| w.folded == *p))
    .then_some(p.len())
}

/// The subject after a trigger ending at word `end` (exclusive), trimmed of punctuation.
fn subject(text: &str, ws: &[Word], end: usize) -> Option<String> {
    let start = ws.get(end)?.start;
    let s = text[start..]
        .trim()
        .trim_end_matches(['.', '!', '?', '¡', '¿', ',', ';', ':'])
        .trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The prompt of the picture `text` asks for, if it asks for one.
pub fn image_request(text: &str) -> Option<String> {
    let ws = words(text);
    // A verb at the start, after any polite openings.
    let mut at = 0;
    'polite: loop {
        for p in POLITE {
            if let Some(n) = matches_at(&ws, at, p) {
                at += n;
                continue 'polite;
            }
        }
        break;
    }
    let longest = |candidates: &[&str], at: usize| {
        candidates
            .iter()
            .filter_map(|p| matches_at(&ws, at, p))
            .max()
    };
    if let Some(n) = longest(VERBS, at) {
        // "dibuja una imagen de un gato": skip a phrase right after the verb.
        let after = at + n;
        let after = after + longest(PHRASES, after).unwrap_or(0);
        if let Some(s) = subject(text, &ws, after) {
            return Some(s);
        }
    }
    (0..ws.len()).find_map(|i| longest(PHRASES, i).and_then(|n| subject(text, &ws, i + n)))
}

/// The `generate_image` call for an image request.
pub fn image_call(text: &str) -> Option<ToolCall> {
    image_request(text).map(|prompt| ToolCall {
        name: "generate_image".into(),
        arguments: json!({ "prompt": prompt }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_spanish_and_english_keep_their_subject_whole() {
        let cases = [
            (
                "Genera una imagen de un desierto al atardecer.",
                "un desierto al atardecer",
            ),
            ("genera una imagen de desierto", "desierto"),
            ("Dibújame un árbol en otoño", "un árbol en otoño"),
            ("¿Puedes dibujar...", ""),
            ("¿Puedes pintar un faro?", "un faro"),
            ("¿Me dibujas una casa?", "una casa"),
            ("Por favor, dibuja una imagen de la montaña", "la montaña"),
            ("Quiero una foto de mi perro", "mi perro"),
            ("Draw a fox in the snow!", "a fox in the snow"),
            ("Can you paint the sea at night?", "the sea at night"),
            ("I'd love an image of a lighthouse", "a lighthouse"),
            ("Please generate an image of Déjà vu", "Déjà vu"),
        ];
        for (text, want) in cases {
            let got = image_request(text).unwrap_or_default();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn ordinary_conversation_asks_for_nothing() {
        for text in [
            "¿Qué es una imagen?",
            "How do I draw conclusions from data?",
            "Explícame la fotosíntesis",
            "The drawing room was empty.",
            "What is a picture?",
            "Describe el desierto de Atacama",
            "Tell me about painters of the Renaissance",
            "",
        ] {
            assert_eq!(image_request(text), None, "{text}");
        }
        let call = image_call("dibuja un gato").unwrap();
        assert_eq!(call.arguments["prompt"], "un gato");
    }
}
