//! Questions from any text: what the Questioner can ask about a document that came without
//! a `qa.jsonl`. Pure rules, Spanish and English, no model: every sentence of a passage is
//! read for the facts it states — a definition ("X is a …" / "X es un …"), a number with
//! its unit, a date or year, a name — and each fact becomes one [`Derived`] question whose
//! reference answer is the sentence itself, so the answer is in the passage by
//! construction. A sentence that states none of these gets a fill-in-the-blank of its most
//! salient word.
//!
//! Each fact is phrased several ways: the question that is trained (an echo question of
//! the clause that holds the fact: "mide unos cuántos kilómetros de punta a punta?"), and
//! held-out paraphrases that decide whether a gap is closed (the whole sentence as an echo
//! question, and a fill-in-the-blank). Near-duplicate questions are dropped.

use std::collections::HashSet;

use crate::eval::score::{fold, words};
use crate::memory::passages::sentences;

/// Shortest sentence worth asking about, in words.
const MIN_SENTENCE_WORDS: usize = 4;
/// Longest: a run-on "sentence" (a text without full stops) is no answer to learn.
const MAX_SENTENCE_WORDS: usize = 60;
/// Longest subject a definition may have, in words.
const MAX_SUBJECT_WORDS: usize = 6;
/// Most facts asked about one sentence.
const MAX_FACTS_PER_SENTENCE: usize = 3;
/// Two questions about the same sentence sharing this share of their words are one.
const NEAR_DUPLICATE: f64 = 0.85;
/// A salient word for a fill-in-the-blank has at least this many letters.
const SALIENT_MIN_CHARS: usize = 6;

/// A question derived from a sentence, its held-out paraphrases, and the sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub question: String,
    pub paraphrases: Vec<String>,
    pub answer: String,
    /// The words of the answer the question asks for.
    pub span: String,
}

/// `es` or `en`: whichever language's common words the text uses more (ties: `en`).
pub fn detect_lang(text: &str) -> &'static str {
    const ES: &[&str] = &[
        "el", "la", "los", "las", "de", "del", "que", "y", "en", "un", "una", "es", "por", "con",
        "para", "se", "su", "al", "como", "más",
    ];
    const EN: &[&str] = &[
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "with", "as", "was", "on",
        "are", "by", "this", "be", "from", "at",
    ];
    let (mut es, mut en) = (0usize, 0usize);
    for w in text.split_whitespace().take(2000) {
        let w = w
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        es += usize::from(ES.contains(&w.as_str()));
        en += usize::from(EN.contains(&w.as_str()));
    }
    if es > en {
        "es"
    } else {
        "en"
    }
}

/// Every question the rules derive from `text` (paragraphs separated by blank lines;
/// `#` headings skipped), in the order of its sentences, without near-duplicates.
pub fn derive(text: &str, lang: &str) -> Vec<Derived> {
    let words_of = Words::for_lang(lang);
    let mut out: Vec<Derived> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for para in text.split("\n\n").map(str::trim) {
        let body: Vec<&str> = para
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.trim_start_matches(['-', '*', '•']).trim())
            .collect();
        if body.is_empty() {
            continue;
        }
        for s in sentences(&body.join(" ")) {
            let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            for d in sentence_questions(&s, &words_of) {
                let key = words(&d.question).join(" ");
                let near = out.iter().rev().take(8).any(|o| {
                    o.answer == d.answer && overlap(&o.question, &d.question) >= NEAR_DUPLICATE
                });
                if !near && seen.insert(key) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Words the two questions share, of all their words (Jaccard).
fn overlap(a: &str, b: &str) -> f64 {
    let (a, b): (HashSet<String>, HashSet<String>) = (
        words(a).into_iter().collect(),
        words(b).into_iter().collect(),
    );
    a.intersection(&b).count() as f64 / a.union(&b).count().max(1) as f64
}

/// The function words and question words of one language.
struct Words {
    es: bool,
    copulas: &'static [&'static str],
    plural_copulas: &'static [&'static str],
    articles: &'static [&'static str],
    /// Subjects that point elsewhere ("It is …"): no definition.
    pronouns: &'static [&'static str],
    places: &'static [&'static str],
    years: &'static [&'static str],
    months: &'static [&'static str],
    /// Lower-case words that may join the capitalised words of one name.
    name_joins: &'static [&'static str],
}

impl Words {
    fn for_lang(lang: &str) -> Words {
        if lang == "es" {
            Words {
                es: true,
                copulas: &["es", "era", "fue"],
                plural_copulas: &["son", "eran", "fueron"],
                articles: &["el", "la", "los", "las", "un", "una", "unos", "unas"],
                pronouns: &[
                    "esto", "eso", "esta", "este", "ella", "él", "ellos", "ellas", "también",
                    "hay", "no", "se", "lo",
                ],
                places: &["en"],
                years: &["en", "desde", "hasta", "hacia"],
                months: &[
                    "enero",
                    "febrero",
                    "marzo",
                    "abril",
                    "mayo",
                    "junio",
                    "julio",
                    "agosto",
                    "septiembre",
                    "octubre",
                    "noviembre",
                    "diciembre",
                ],
                name_joins: &["de", "del", "de la", "las", "los"],
            }
        } else {
            Words {
                es: false,
                copulas: &["is", "was"],
                plural_copulas: &["are", "were"],
                articles: &["the", "a", "an"],
                pronouns: &[
                    "it", "this", "that", "these", "those", "they", "he", "she", "there", "we",
                    "you", "i",
                ],
                places: &["in", "at"],
                years: &["in", "since", "until", "by"],
                months: &[
                    "january",
                    "february",
                    "march",
                    "april",
                    "may",
                    "june",
                    "july",
                    "august",
                    "september",
                    "october",
                    "november",
                    "december",
                ],
                name_joins: &["of", "the", "de"],
            }
        }
    }

    fn ask(&self, body: &str) -> String {
        let body = capitalise(body.trim());
        if self.es {
            format!("¿{body}?")
        } else {
            format!("{body}?")
        }
    }

    fn blank(&self, sentence: &str) -> String {
        if self.es {
            format!("Completa el hueco: {sentence}")
        } else {
            format!("Fill in the blank: {sentence}")
        }
    }

    fn how_many(&self, unit: Option<&str>) -> String {
        match (self.es, unit) {
            (true, Some(u)) if u.ends_with('a') || u.ends_with("as") => format!("cuántas {u}"),
            (true, Some(u)) => format!("cuántos {u}"),
            (true, None) => "cuánto".into(),
            (false, Some(u)) => format!("how many {u}"),
            (false, None) => "what number".into(),
        }
    }

    fn what(&self) -> &'static str {
        if self.es {
            "qué"
        } else {
            "what"
        }
    }

    fn when(&self) -> &'static str {
        if self.es {
            "cuándo"
        } else {
            "when"
        }
    }

    fn where_(&self) -> &'static str {
        if self.es {
            "dónde"
        } else {
            "where"
        }
    }

    fn define(&self, subject: &str, plural: bool) -> [String; 3] {
        match (self.es, plural) {
            (true, false) => [
                format!("¿Qué es {subject}?"),
                format!("¿Qué dice el texto que es {subject}?"),
                format!("Describe {subject}."),
            ],
            (true, true) => [
                format!("¿Qué son {subject}?"),
                format!("¿Qué dice el texto que son {subject}?"),
                format!("Describe {subject}."),
            ],
            (false, false) => [
                format!("What is {subject}?"),
                format!("What does the text say {subject} is?"),
                format!("Describe {subject}."),
            ],
            (false, true) => [
                format!("What are {subject}?"),
                format!("What does the text say {subject} are?"),
                format!("Describe {subject}."),
            ],
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A word of a sentence: the text as written and its letters and digits.
fn core(token: &str) -> &str {
    token.trim_matches(|c: char| !c.is_alphanumeric())
}

fn is_capitalised(token: &str) -> bool {
    core(token).chars().next().is_some_and(char::is_uppercase)
}

/// Ends a clause: the token carries a comma, semicolon or colon after its word.
fn ends_clause(token: &str) -> bool {
    token.ends_with([',', ';', ':'])
}

/// A fact of a sentence: tokens `start..end` are the span, `wh` the words that ask for it.
struct Fact {
    start: usize,
    end: usize,
    wh: String,
}

/// The questions about one sentence.
fn sentence_questions(sentence: &str, w: &Words) -> Vec<Derived> {
    let tokens: Vec<&str> = sentence.split(' ').collect();
    if !(MIN_SENTENCE_WORDS..=MAX_SENTENCE_WORDS).contains(&tokens.len()) || sentence.ends_with('?')
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(d) = definition(sentence, &tokens, w) {
        out.push(d);
    }
    let mut facts = numbers(&tokens, w);
    facts.extend(names(&tokens, w));
    if facts.is_empty() && out.is_empty() {
        facts.extend(salient(&tokens, w));
    }
    facts.sort_by_key(|f| f.start);
    facts.dedup_by(|b, a| b.start < a.end);
    for f in facts {
        if out.len() >= MAX_FACTS_PER_SENTENCE {
            break;
        }
        out.push(echo(sentence, &tokens, &f, w));
    }
    out
}

/// "X is a …" / "X es un …" with a short subject that names something.
fn definition(sentence: &str, tokens: &[&str], w: &Words) -> Option<Derived> {
    let k = tokens.iter().take(MAX_SUBJECT_WORDS + 1).position(|t| {
        let c = core(t).to_lowercase();
        w.copulas.contains(&c.as_str()) || w.plural_copulas.contains(&c.as_str())
    })?;
    if k == 0
        || k + 1 >= tokens.len()
        || tokens[..k]
            .iter()
            .any(|t| ends_clause(t) || core(t).is_empty())
    {
        return None;
    }
    let first = core(tokens[0]).to_lowercase();
    if w.pronouns.contains(&first.as_str()) || first.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    // A thing named ("The main telescope", "Tessaline", "La capital"), not a clause that
    // opens with an adverb or a possessive ("Today the observatory", "Its name").
    if !w.articles.contains(&first.as_str()) && !tokens[..k].iter().all(|t| is_capitalised(t)) {
        return None;
    }
    let plural = w
        .plural_copulas
        .contains(&core(tokens[k]).to_lowercase().as_str());
    let mut subject: Vec<String> = tokens[..k].iter().map(|t| t.to_string()).collect();
    if w.articles.contains(&first.as_str()) {
        subject[0] = first;
    }
    let subject = subject.join(" ");
    let [ask, para, describe] = w.define(&subject, plural);
    Some(Derived {
        question: ask,
        paraphrases: vec![para, describe],
        answer: sentence.to_string(),
        span: tokens[k + 1..].join(" "),
    })
}

/// Numbers with the unit after them, years and dates.
fn numbers(tokens: &[&str], w: &Words) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let c = core(tokens[i]);
        if !c.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
            i += 1;
            continue;
        }
        let lower = |j: usize| tokens.get(j).map(|t| core(t).to_lowercase());
        let prev = i.checked_sub(1).and_then(lower);
        let next = lower(i + 1);
        let is_year = c.len() == 4 && c.parse::<u32>().is_ok_and(|y| (1000..=2100).contains(&y));
        // "17 de octubre", "October 17", "17 October": a date.
        let month_after = if w.es {
            next.as_deref() == Some("de")
                && lower(i + 2).is_some_and(|m| w.months.contains(&m.as_str()))
        } else {
            next.as_deref().is_some_and(|m| w.months.contains(&m))
        };
        let month_before = prev.as_deref().is_some_and(|m| w.months.contains(&m));
        let fact = if month_after {
            let mut end = if w.es { i + 3 } else { i + 2 };
            // "3 March 1871", "3 de marzo de 1871": the year belongs to the date.
            let year_at = if w.es && lower(end).as_deref() == Some("de") {
                end + 1
            } else {
                end
            };
            if tokens
                .get(year_at)
                .is_some_and(|t| core(t).len() == 4 && core(t).chars().all(|c| c.is_ascii_digit()))
            {
                end = year_at + 1;
            }
            Fact {
                start: i,
                end: end.min(tokens.len()),
                wh: w.when().into(),
            }
        } else if month_before || (is_year && prev.as_deref().is_some_and(|p| w.years.contains(&p)))
        {
            // "October 17", "in 1783": the word before belongs to the answer.
            Fact {
                start: i - 1,
                end: i + 1,
                wh: w.when().into(),
            }
        } else {
            // The unit: the next word when it is a lower-case word, not a function word.
            let unit = tokens
                .get(i + 1)
                .filter(|_| !ends_clause(tokens[i]))
                .map(|t| core(t))
                .filter(|u| {
                    u.chars().count() > 2
                        && !crate::memory::lexical::query_words(u).is_empty()
                        && u.chars().all(char::is_alphabetic)
                        && u.chars().next().is_some_and(char::is_lowercase)
                });
            Fact {
                start: i,
                end: i + 1 + usize::from(unit.is_some()),
                wh: w.how_many(unit),
            }
        };
        i = fact.end;
        out.push(fact);
    }
    out
}

/// Capitalised names (one at the start of the sentence only when it is longer than its
/// first word, which is capitalised anyway), with the preposition of place before them
/// when there is one.
fn names(tokens: &[&str], w: &Words) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !is_capitalised(tokens[i]) || core(tokens[i]).chars().count() < 2 {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < tokens.len() && !ends_clause(tokens[end - 1]) {
            if is_capitalised(tokens[end]) {
                end += 1;
            } else if w
                .name_joins
                .contains(&core(tokens[end]).to_lowercase().as_str())
                && tokens.get(end + 1).is_some_and(|t| is_capitalised(t))
                && !ends_clause(tokens[end])
            {
                end += 2;
            } else {
                break;
            }
        }
        if i == 0 && end == 1 {
            i = 1;
            continue;
        }
        let place = i > 0
            && w.places
                .contains(&core(tokens[i - 1]).to_lowercase().as_str());
        out.push(if place {
            Fact {
                start: i - 1,
                end,
                wh: w.where_().into(),
            }
        } else {
            Fact {
                start: i,
                end,
                wh: w.what().into(),
            }
        });
        i = end;
    }
    out
}

/// The longest uncommon word, for a sentence that states nothing else to ask about.
fn salient(tokens: &[&str], w: &Words) -> Option<Fact> {
    let (i, _) = tokens
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, t)| (i, core(t).chars().count()))
        .filter(|&(_, n)| n >= SALIENT_MIN_CHARS)
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
    Some(Fact {
        start: i,
        end: i + 1,
        wh: w.what().into(),
    })
}

/// The fact as an echo question of its clause (trained), of the whole sentence and as a
/// fill-in-the-blank (held out).
fn echo(sentence: &str, tokens: &[&str], f: &Fact, w: &Words) -> Derived {
    // Punctuation stuck to the span's last word stays ("Sorvelas," keeps its comma).
    let tail = |t: &str| {
        let c = core(t);
        t[t.rfind(c).map_or(t.len(), |p| p + c.len())..].to_string()
    };
    let last_tail = tail(tokens[f.end - 1]);
    let lead = {
        let t = tokens[f.start];
        t[..t.find(core(t)).unwrap_or(0)].to_string()
    };
    let replaced = |with: &str, from: usize, to: usize| -> String {
        let mut parts: Vec<String> = tokens[from..f.start]
            .iter()
            .map(|t| t.to_string())
            .collect();
        parts.push(format!("{lead}{with}{last_tail}"));
        parts.extend(tokens[f.end..to].iter().map(|t| t.to_string()));
        let s = parts.join(" ");
        s.trim_end_matches(['.', '!', '…', ',', ';', ':'])
            .trim_start_matches(['¿', '¡'])
            .to_string()
    };
    let whole = w.ask(&replaced(&f.wh, 0, tokens.len()));
    // The clause: from after the last clause mark before the span to the first after it.
    let from = (0..f.start)
        .rev()
        .find(|&j| ends_clause(tokens[j]))
        .map_or(0, |j| j + 1);
    let to = if ends_clause(tokens[f.end - 1]) {
        f.end
    } else {
        (f.end..tokens.len())
            .find(|&j| ends_clause(tokens[j]))
            .map_or(tokens.len(), |j| j + 1)
    };
    let clause = w.ask(&replaced(&f.wh, from, to));
    let mut blank = replaced("___", 0, tokens.len());
    blank.push('.');
    let question = if clause.split(' ').count() >= MIN_SENTENCE_WORDS {
        clause
    } else {
        whole.clone()
    };
    let mut paraphrases = vec![whole, w.blank(&blank)];
    paraphrases.retain(|p| fold(p) != fold(&question));
    Derived {
        question,
        paraphrases,
        answer: sentence.to_string(),
        span: tokens[f.start..f.end]
            .iter()
            .map(|t| core(t))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ES: &str = "# La isla\n\nQuendralia es una isla pequeña del archipiélago de las Sorvelas, en un mar templado. Tiene forma de media luna y mide unos 23 kilómetros de punta a punta.\n\nLa capital es Villa Tresmares, un puerto donde viven 4312 personas. La fundó en 1783 la navegante Bartola Quiñonero. Cada 17 de octubre se celebra la fiesta.";
    const EN: &str = "Brindlewick Observatory is a small observatory on a hill. It was built in 1911 by the engineer Maud Halloran, and its dome weighs 40 tonnes.\n\nVisitors climb 212 steps to reach the telescope in Lower Fenmarch. Clear nights seldom happen there.";

    #[test]
    fn the_language_is_told_by_its_common_words() {
        assert_eq!(detect_lang(ES), "es");
        assert_eq!(detect_lang(EN), "en");
        assert_eq!(detect_lang(""), "en");
    }

    #[test]
    fn spanish_sentences_give_definitions_numbers_dates_and_names() {
        let qs = derive(ES, "es");
        let asks: Vec<&str> = qs.iter().map(|d| d.question.as_str()).collect();
        assert!(asks.contains(&"¿Qué es Quendralia?"), "{asks:#?}");
        assert!(
            asks.contains(
                &"¿Tiene forma de media luna y mide unos cuántos kilómetros de punta a punta?"
            ),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.contains("cuántas personas")),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.contains("cuándo la navegante")),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.contains("Cada cuándo se celebra")),
            "{asks:#?}"
        );
        assert!(asks.iter().any(|q| q.contains("las qué")), "{asks:#?}");
        for d in &qs {
            // Answerable: the reference answer is a sentence of the text holding the span.
            assert!(ES.contains(&d.answer), "{d:?}");
            assert!(fold(&d.answer).contains(&fold(&d.span)), "{d:?}");
            assert!(d.question.starts_with('¿') || d.question.starts_with("Describe"));
            assert!(!d.paraphrases.is_empty());
            assert!(!d.paraphrases.contains(&d.question));
        }
        // The heading is not a sentence to ask about.
        assert!(qs.iter().all(|d| !d.answer.contains('#')));
    }

    #[test]
    fn english_sentences_give_when_where_and_how_many() {
        let qs = derive(EN, "en");
        let asks: Vec<&str> = qs.iter().map(|d| d.question.as_str()).collect();
        assert!(
            asks.contains(&"What is Brindlewick Observatory?"),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.starts_with("It was built when")),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.contains("how many tonnes")),
            "{asks:#?}"
        );
        assert!(
            asks.iter().any(|q| q.contains("telescope where")),
            "{asks:#?}"
        );
        let blank = qs
            .iter()
            .flat_map(|d| &d.paraphrases)
            .find(|p| p.contains("___ steps"));
        assert!(blank.is_none(), "the number and its unit are one span");
        assert!(qs.iter().flat_map(|d| &d.paraphrases).any(|p| p
            == "Fill in the blank: Visitors climb ___ to reach the telescope in Lower Fenmarch."));
        // "It was built …" names nothing: no definition of "it".
        assert!(!asks.iter().any(|q| q.starts_with("What was it")));
        // A sentence with nothing else to ask gets a fill-in-the-blank of a salient word.
        assert!(
            asks.contains(&"Clear what seldom happen there?"),
            "{asks:#?}"
        );
        // A name that opens the sentence is asked for as its subject.
        assert!(
            asks.contains(&"What is a small observatory on a hill?"),
            "{asks:#?}"
        );
    }

    #[test]
    fn near_duplicates_and_questions_in_the_text_are_dropped() {
        let text = "Mars has 2 moons. Mars has 2 moons. Is Mars red?";
        let qs = derive(text, "en");
        assert_eq!(qs.len(), 1, "{qs:#?}");
        assert_eq!(qs[0].question, "Mars has how many moons?");
    }

    #[test]
    fn there_are_several_questions_per_hundred_words() {
        let n_words = EN.split_whitespace().count() + ES.split_whitespace().count();
        let n = derive(EN, "en").len() + derive(ES, "es").len();
        assert!(n * 100 >= 5 * n_words, "{n} questions for {n_words} words");
    }
}
