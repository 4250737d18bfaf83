//! [`ThauTokenizer`]: THAU's own byte-level BPE, trained with the `tokenizers` crate on the
//! training corpus, plus the chat template that turns a conversation into tokens (with the
//! loss mask that trains only the assistant's words and its end-of-turn token).
//!
//! Chat layout: `<|system|> text<|eot|><|user|> text<|eot|><|assistant|> text<|eot|>`.
//! A turn's text starts with a space ([`turn_text`]), so that its first word is the same
//! token as that word inside a text: an answer's first word can be copied from the
//! memories, and a question's first word matches theirs.
//! Recalled memories travel in a leading system turn laid out by [`memory_block`]
//! (`Memories:` then one `- passage` line each), in chat, in open-book training items, and
//! for clients of an exported model, which pass them as a system message.
//! Byte-level BPE round-trips any UTF-8 text exactly (accents, ñ, ¿¡, emoji).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::{ModelError, Result};

/// Padding (never predicted).
pub const PAD: &str = "<|pad|>";
/// End of a turn, and of a plain-text document: the model learns to stop here.
pub const EOT: &str = "<|eot|>";
pub const SYSTEM: &str = "<|system|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const TOOL: &str = "<|tool|>";
/// Opening of a tool call: `<TOOL:name>{json}</TOOL>`.
pub const TOOL_OPEN: &str = "<TOOL:";
pub const TOOL_CLOSE: &str = "</TOOL>";

/// Special tokens, in id order (ids 0..8).
pub const SPECIAL_TOKENS: [&str; 8] = [
    PAD, EOT, SYSTEM, USER, ASSISTANT, TOOL, TOOL_OPEN, TOOL_CLOSE,
];

/// Ids of the chat template's markers in every THAU tokenizer: the special tokens take the
/// first ids, in the order of [`SPECIAL_TOKENS`] (the loader checks it). The copy head
/// finds a prompt's turns by them (`super::reading`), and decoding knows an answer from
/// them.
pub const PAD_ID: u32 = 0;
pub const EOT_ID: u32 = 1;
pub const SYSTEM_ID: u32 = 2;
pub const USER_ID: u32 = 3;
pub const ASSISTANT_ID: u32 = 4;
pub const TOOL_ID: u32 = 5;
pub const TOOL_OPEN_ID: u32 = 6;

/// `</TOOL>`'s id: the token that closes a call ([`super::grammar`]).
pub const TOOL_CLOSE_ID: u32 = 7;

/// The byte a character of a byte-level token stands for: GPT-2's `bytes_to_unicode`
/// keeps the printable bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) as themselves and maps the
/// other 68 to U+0100 onwards, in byte order.
pub fn byte_of_char(c: char) -> Option<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let c = c as u32;
    if c < 256 && printable(c) {
        return Some(c as u8);
    }
    (0..=255u32)
        .filter(|&b| !printable(b))
        .nth(c.checked_sub(256)? as usize)
        .map(|b| b as u8)
}

/// First line of the system turn that carries recalled memories.
pub const MEMORY_HEADER: &str = "Memories:";

/// The system-turn text that gives the model its memories: [`MEMORY_HEADER`], then each
/// memory on a line of its own after `- ` (line breaks inside a memory become spaces, so
/// one line is one memory).
pub fn memory_block<S: AsRef<str>>(memories: &[S]) -> String {
    let mut out = String::from(MEMORY_HEADER);
    for m in memories {
        out.push_str("\n- ");
        out.push_str(&m.as_ref().split_whitespace().collect::<Vec<_>>().join(" "));
    }
    out
}

/// A turn's text as it follows its marker: after one space (Llama's tokenizer adds such a
/// "dummy prefix" to every text). A word is a different token at the start of a text
/// ("La") than inside one (" La"); with the space, the first word of an answer is the
/// token the memories hold, which the copy head can copy. Decoding drops the space again
/// ([`crate::model::generate::Sequence`]), so any text round-trips exactly.
pub fn turn_text(text: &str) -> String {
    format!(" {text}")
}

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// Ids of the special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub eot: u32,
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
    pub tool: u32,
    pub tool_open: u32,
    pub tool_close: u32,
}

/// The BPE tokenizer with THAU's special tokens.
#[derive(Clone)]
pub struct ThauTokenizer {
    inner: Tokenizer,
    pub special: SpecialIds,
}

/// Reads a `tokenizer.json` with the `tokenizers` crate. Its deserialiser panics on some
/// malformed files (found by fuzzing: a truncated `decoder` section trips an `expect`);
/// here that is an error naming the file, as for any other malformed input.
pub fn load_tokenizer_file(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let parsed = std::panic::catch_unwind(|| Tokenizer::from_bytes(&bytes));
    match parsed {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(ModelError::file(path, e)),
        Err(_) => Err(ModelError::file(path, "malformed tokenizer file")),
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl ThauTokenizer {
    /// Trains a byte-level BPE of `vocab_size` tokens (special tokens included) on `texts`.
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        if vocab_size < 256 + SPECIAL_TOKENS.len() {
            return Err(ModelError::Tokenizer(format!(
                "vocab_size {vocab_size} is below the 256 byte symbols plus {} special tokens",
                SPECIAL_TOKENS.len()
            )));
        }
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(2)
                .show_progress(false)
                .special_tokens(
                    SPECIAL_TOKENS
                        .iter()
                        .map(|s| AddedToken::from(*s, true))
                        .collect(),
                )
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .build(),
        );
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        inner.train(&mut trainer, texts).map_err(tok_err)?;
        Self::from_inner(inner)
    }

    fn from_inner(inner: Tokenizer) -> Result<Self> {
        let id = |s: &str| {
            inner
                .token_to_id(s)
                .ok_or_else(|| ModelError::Tokenizer(format!("special token {s} is missing")))
        };
        let special = SpecialIds {
            pad: id(PAD)?,
            eot: id(EOT)?,
            system: id(SYSTEM)?,
            user: id(USER)?,
            assistant: id(ASSISTANT)?,
            tool: id(TOOL)?,
            tool_open: id(TOOL_OPEN)?,
            tool_close: id(TOOL_CLOSE)?,
        };
        // The copy head and decoding find the chat template's turns by these ids.
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            if id(s)? != i as u32 {
                return Err(ModelError::Tokenizer(format!(
                    "special token {s} has id {}, THAU's tokenizers give it {i}",
                    id(s)?
                )));
            }
        }
        Ok(ThauTokenizer { inner, special })
    }

    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_inner(load_tokenizer_file(path)?)
    }

    /// The tokenizer as JSON (what [`Self::load`] reads).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tok_err)
    }

    /// Saves `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::atomic_write(path, self.to_json()?.as_bytes())
            .map_err(|e| ModelError::file(path, e))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; special-token strings inside it become their special ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens written out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// The token string of one id (for display and export).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Each token's bytes, by id (`None` for the special tokens): what constrained decoding
    /// ([`super::grammar`]) checks a token by. A byte-level token's string spells its
    /// bytes in GPT-2's printable alphabet ([`byte_of_char`]).
    pub fn token_bytes(&self) -> Vec<Option<Vec<u8>>> {
        (0..self.vocab_size() as u32)
            .map(|id| {
                if (id as usize) < SPECIAL_TOKENS.len() {
                    return None;
                }
                let t = self.inner.id_to_token(id)?;
                t.chars().map(byte_of_char).collect()
            })
            .collect()
    }

    /// The underlying `tokenizers` tokenizer (for export).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn role_id(&self, role: Role) -> u32 {
        match role {
            Role::System => self.special.system,
            Role::User => self.special.user,
            Role::Assistant => self.special.assistant,
            Role::Tool => self.special.tool,
        }
    }

    /// A turn's text as the chat template encodes it ([`turn_text`]): what an answer is
    /// scored as after a prompt.
    pub fn encode_turn(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(&turn_text(text))
    }

    /// A conversation as tokens and a loss mask (1 on the assistant's content and its
    /// end-of-turn token: the words to learn, and when to stop).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<(Vec<u32>, Vec<u8>)> {
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for m in messages {
            let learn = u8::from(m.role == Role::Assistant);
            ids.push(self.role_id(m.role));
            mask.push(0);
            let body = self.encode_turn(&m.content)?;
            mask.extend(std::iter::repeat_n(learn, body.len() + 1));
            ids.extend(body);
            ids.push(self.special.eot);
        }
        Ok((ids, mask))
    }

    /// The tokens that prompt the model to answer `messages` (ends with `<|assistant|>`).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let (mut ids, _) = self.encode_chat(messages)?;
        ids.push(self.special.assistant);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tokenizer() -> ThauTokenizer {
        let texts = [
            "¿Qué es el ciclo del agua? El agua se evapora, se condensa y cae como lluvia.",
            "¡Hola, señor Muñoz! La montaña está cubierta de nieve en invierno.",
            "The water cycle moves water between the oceans, the air and the land.",
            "fn main() { println!(\"hello\"); } // Rust ownership and borrowing",
        ];
        let corpus: Vec<String> = (0..20)
            .flat_map(|_| texts.iter().map(|s| s.to_string()))
            .collect();
        ThauTokenizer::train(corpus.into_iter(), 400).unwrap()
    }

    #[test]
    fn a_tokens_bytes_spell_exactly_the_text_it_encodes() {
        let tok = sample_tokenizer();
        let bytes = tok.token_bytes();
        assert_eq!(bytes.len(), tok.vocab_size());
        assert!(bytes[..SPECIAL_TOKENS.len()].iter().all(Option::is_none));
        assert_eq!(bytes[TOOL_CLOSE_ID as usize], None);
        assert_eq!(tok.encode(TOOL_CLOSE).unwrap(), [TOOL_CLOSE_ID]);
        for text in [
            "naïve café — déjà vu; 日本語 🦀\n\t {\"prompt\": \"un río\"}",
            "\u{0}\u{7f} control bytes and a tab\t too",
        ] {
            let spelled: Vec<u8> = tok
                .encode(text)
                .unwrap()
                .iter()
                .flat_map(|&id| bytes[id as usize].clone().unwrap())
                .collect();
            assert_eq!(spelled, text.as_bytes());
        }
        assert_eq!(byte_of_char('Ā'), Some(0));
        assert_eq!(byte_of_char('Ġ'), Some(b' '));
        assert_eq!(byte_of_char('a'), Some(b'a'));
        assert_eq!(byte_of_char('\u{3000}'), None);
    }

    #[test]
    fn spanish_english_and_special_tokens_round_trip_exactly() {
        let tok = sample_tokenizer();
        assert_eq!(tok.special.pad, 0);
        assert_eq!(tok.special.eot, 1);
        for text in [
            "¿Dónde está el niño? ¡Aquí, en el desierto de Atacama! Año, pingüino, acción.",
            "naïve café — déjà vu; 日本語 and emoji 🦀 survive byte-level BPE",
            "<|user|>¿Cómo estás?<|eot|><|assistant|><TOOL:generate_image>{\"prompt\":\"un río\"}</TOOL><|eot|>",
        ] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        let ids = tok.encode("<|eot|><TOOL:x></TOOL>").unwrap();
        assert_eq!(ids[0], tok.special.eot);
        assert_eq!(ids[1], tok.special.tool_open);
        assert_eq!(*ids.last().unwrap(), tok.special.tool_close);
    }

    #[test]
    fn memory_block_is_one_line_per_memory() {
        assert_eq!(
            memory_block(&["El agua\nhierve a 100 °C.", "B"]),
            "Memories:\n- El agua hierve a 100 °C.\n- B"
        );
    }

    #[test]
    fn chat_template_masks_everything_but_the_answer_and_its_end() {
        let tok = sample_tokenizer();
        let msgs = [
            Message::new(Role::User, "¿Qué es?"),
            Message::new(Role::Assistant, "Agua."),
        ];
        let (ids, mask) = tok.encode_chat(&msgs).unwrap();
        assert_eq!(ids.len(), mask.len());
        // The turn's text after one space.
        let answer = tok.encode(" Agua.").unwrap();
        assert_eq!(tok.encode_turn("Agua.").unwrap(), answer);
        let learned: Vec<u32> = ids
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        let mut expected = answer.clone();
        expected.push(tok.special.eot);
        assert_eq!(learned, expected);
        let prompt = tok.chat_prompt(&msgs[..1]).unwrap();
        assert_eq!(*prompt.last().unwrap(), tok.special.assistant);
    }

    #[test]
    fn an_answers_first_word_is_the_token_the_memories_hold() {
        let tok = sample_tokenizer();
        let msgs = [
            Message::new(
                Role::System,
                memory_block(&["Hoy llueve. La montaña está cubierta."]),
            ),
            Message::new(Role::User, "¿Qué cubre la montaña?"),
            Message::new(Role::Assistant, "La montaña está cubierta de nieve."),
        ];
        let (ids, _) = tok.encode_chat(&msgs).unwrap();
        let la = tok.encode(" La").unwrap();
        assert_eq!(la.len(), 1);
        let marker = ids.iter().rposition(|&i| i == ASSISTANT_ID).unwrap();
        assert_eq!(ids[marker + 1], la[0]);
        assert_eq!(ids.iter().filter(|&&i| i == la[0]).count(), 2);
    }

    #[test]
    fn the_chat_markers_have_the_first_ids() {
        let tok = sample_tokenizer();
        let s = tok.special;
        assert_eq!(
            [s.eot, s.system, s.user, s.assistant, s.tool, s.tool_open],
            [
                EOT_ID,
                SYSTEM_ID,
                USER_ID,
                ASSISTANT_ID,
                TOOL_ID,
                TOOL_OPEN_ID
            ]
        );
    }

    #[test]
    fn save_and_load_keep_the_vocabulary() {
        let tok = sample_tokenizer();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        tok.save(&p).unwrap();
        let back = ThauTokenizer::load(&p).unwrap();
        let text = "El pingüino camina. The penguin walks.";
        assert_eq!(back.encode(text).unwrap(), tok.encode(text).unwrap());
        std::fs::write(&p, b"{ not json").unwrap();
        let err = ThauTokenizer::load(&p).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
