//! Plain-text helpers shared by every layer (the model's reading, lexical search, answer
//! scoring): how words are folded for comparison, and which words are too common to tell
//! texts apart.

/// Words too common to rank by, in the two languages THAU ships with. Leaving them out of
/// the query keeps BM25 on the words that tell passages apart, and keeps a search over
/// 100,000 passages from walking the longest posting lists; the copy head's reading
/// ([`crate::model::reading`]) leaves them out for the same reason.
pub const STOP_WORDS: &[&str] = &[
    // English
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "did", "do", "does", "for", "from",
    "had", "has", "have", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or",
    "tell", "that", "the", "their", "them", "there", "these", "they", "this", "to", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "you",
    "your", // Spanish
    "al", "cómo", "como", "con", "cual", "cuál", "de", "del", "dime", "el", "en", "es", "esta",
    "está", "este", "la", "las", "lo", "los", "me", "mi", "para", "pero", "por", "que", "qué",
    "se", "si", "su", "sus", "te", "tu", "un", "una", "unas", "unos", "y", "o",
];

/// Words that open a sentence which goes on about the one before it: pronouns and
/// demonstratives, and the Spanish verbs a sentence with a dropped subject starts with
/// ("Es más grande que…"). A sentence that opens with one does not stand alone, so an
/// answer taken from the sentence before it takes it too (`crate::model::reading` for the
/// model's answers, `crate::eval::score::best_sentence` for retrieval's). Articles ("la",
/// "el") are not among them: most sentences that open with one name their own subject.
pub const REFERRING_WORDS: &[&str] = &[
    // English
    "it", "its", "they", "their", "them", "this", "these", "those", "he", "she", "his", "her",
    "such", "both", // Spanish
    "es", "son", "fue", "era", "su", "sus", "se", "esto", "esta", "este", "estos", "estas", "eso",
    "esa", "ese", "ello", "ellos", "ellas", "ella", "ambos", "ambas", "tiene", "tienen",
];

/// Whether `sentence` opens with one of the [`REFERRING_WORDS`].
pub fn refers_back(sentence: &str) -> bool {
    let folded = fold(sentence);
    let first = folded
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty());
    first.is_some_and(|w| REFERRING_WORDS.iter().any(|r| fold(r) == w))
}

/// Lower-case, accents removed (the Latin letters of Spanish, French, Portuguese, German),
/// and the separators inside digit groups dropped.
pub fn fold(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let sep = matches!(c, ',' | '.' | '\'' | '\u{a0}' | '\u{202f}' | '_');
        let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
        let digit_after = chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
        if sep && digit_before && digit_after {
            continue;
        }
        for l in c.to_lowercase() {
            out.push(match l {
                'á' | 'à' | 'ä' | 'â' | 'ã' | 'å' => 'a',
                'é' | 'è' | 'ë' | 'ê' => 'e',
                'í' | 'ì' | 'ï' | 'î' => 'i',
                'ó' | 'ò' | 'ö' | 'ô' | 'õ' => 'o',
                'ú' | 'ù' | 'ü' | 'û' => 'u',
                'ñ' => 'n',
                'ç' => 'c',
                other => other,
            });
        }
    }
    out
}

/// Characters a word keeps as its search key ([`stem`]): enough to tell words apart, few
/// enough that the longer forms of one word meet ("temperature" and "temperatures",
/// "ecosistema" and "ecosistemas"; not "boil" and "boiling"). Measured on the 236 held-out questions over the shipped corpus's
/// passages (BM25): recall@3 198 with whole words, 205 with 6 characters, 206 with 5 —
/// whose recall@1 is 3 lower.
pub const STEM_CHARS: usize = 6;

/// A word's search key: folded ([`fold`]) and cut to its first [`STEM_CHARS`] characters.
/// A crude stemmer for two languages at once; it never merges two words that differ in
/// their first six letters, and the words it does merge are mostly forms of one word.
pub fn stem(word: &str) -> String {
    fold(word).chars().take(STEM_CHARS).collect()
}

/// The search keys of `text`'s words, in order: the text as lexical search indexes it.
pub fn stems(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(STEM_CHARS).collect())
        .collect()
}

/// The distinct search keys ([`stem`]) of `text`'s words that are not [`STOP_WORDS`]: what
/// a question asks about, in order.
pub fn content_stems(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if STOP_WORDS.iter().any(|s| fold(s) == w) {
            continue;
        }
        let k: String = w.chars().take(STEM_CHARS).collect();
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Which of `sentences` holds the most of `question`'s content words ([`content_stems`]),
/// the first of equals (memories come best first); `None` when none holds any. The one
/// choice of the sentence that answers, made by the retrieval-only baseline
/// (`crate::eval::score::best_sentence`) over texts and by the decoder
/// (`crate::model::reading::answer_start`) over the memory's tokens.
pub fn best_match<S: AsRef<str>>(question: &str, sentences: &[S]) -> Option<usize> {
    let asked = content_stems(question);
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in sentences.iter().enumerate() {
        let have = stems(s.as_ref());
        let shared = asked.iter().filter(|w| have.contains(w)).count();
        if shared > 0 && best.is_none_or(|b| shared > b.0) {
            best = Some((shared, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_that_opens_with_a_pronoun_refers_back() {
        assert!(refers_back("It was introduced in 1582."));
        assert!(refers_back("  «Es más grande que toda la tierra firme."));
        assert!(refers_back("Éste es el mayor."));
        assert!(!refers_back("La levadura es un hongo."));
        assert!(
            !refers_back("Items are counted."),
            "a word that starts like one"
        );
        assert!(!refers_back(""));
    }

    #[test]
    fn the_answering_sentence_shares_the_most_question_words_and_the_first_wins_ties() {
        let sentences = [
            "Steaming cooks food with vapour from boiling water.",
            "At sea level, water boils at 100 degrees.",
            "Water boils faster in a small pot.",
        ];
        assert_eq!(
            best_match("When does water boil at sea level?", &sentences),
            Some(1)
        );
        assert_eq!(best_match("Is boiling water hot?", &sentences), Some(0));
        assert_eq!(best_match("What is the?", &sentences), None);
        assert_eq!(
            content_stems("¿Qué es el Núcleo?"),
            vec!["nucleo".to_string()]
        );
    }

    #[test]
    fn the_forms_of_a_word_share_its_search_key() {
        assert_eq!(stem("Temperatures"), stem("temperature"));
        assert_eq!(stem("ecosistemas"), stem("Ecosistema"));
        assert_eq!(stem("Núcleo"), "nucleo");
        assert_ne!(stem("planet"), stem("plant"));
        assert_eq!(
            stems("¿Vale 3,14159? Sí."),
            vec!["vale".to_string(), "314159".into(), "si".into()]
        );
    }
}
