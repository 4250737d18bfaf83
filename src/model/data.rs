//! Training data: a [`Corpus`] of [`Example`]s read from plain text (`.txt`, `.md`) and
//! JSON Lines (`{"question","answer"}` or `{"messages":[{"role","content"}]}`), split into
//! train and held-out parts by a stable hash, tokenised and packed into fixed-length
//! windows ([`Windows`]) that a seeded [`Batcher`] serves in a reproducible order.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::ops::IGNORE_INDEX;
use super::tokenizer::{Message, Role, ThauTokenizer};
use super::{ModelError, Result};

/// Plain-text documents are cut into chunks of about this many characters, at paragraph
/// boundaries, so that the held-out split samples every document.
pub const CHUNK_CHARS: usize = 1200;
/// Share of examples held out for evaluation.
pub const HELDOUT_FRACTION: f64 = 0.05;
/// File extensions read as plain text.
const TEXT_EXTENSIONS: [&str; 2] = ["txt", "md"];

/// One unit of training data.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// Plain text: every token is learned.
    Text(String),
    /// A conversation: only the assistant's turns are learned.
    Chat(Vec<Message>),
}

impl Example {
    /// A stable key for the train/held-out split (independent of seed and file order).
    fn key(&self) -> u64 {
        // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |s: &str| {
            for b in s.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match self {
            Example::Text(t) => feed(t),
            Example::Chat(ms) => ms.iter().for_each(|m| feed(&m.content)),
        }
        h
    }

    /// Tokens and loss mask.
    pub fn encode(&self, tok: &ThauTokenizer) -> Result<(Vec<u32>, Vec<u8>)> {
        match self {
            Example::Text(t) => {
                let mut ids = tok.encode(t)?;
                ids.push(tok.special.eot);
                let mask = vec![1; ids.len()];
                Ok((ids, mask))
            }
            Example::Chat(ms) => tok.encode_chat(ms),
        }
    }

    /// The raw text (for tokenizer training): a conversation's turns one per line, each
    /// as the chat template writes it ([`super::tokenizer::turn_text`]), so the tokenizer
    /// learns the tokens the model will see.
    pub fn text(&self) -> String {
        match self {
            Example::Text(t) => t.clone(),
            Example::Chat(ms) => ms
                .iter()
                .map(|m| super::tokenizer::turn_text(&m.content))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Examples read from files.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub examples: Vec<Example>,
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct JsonLine {
    question: Option<String>,
    answer: Option<String>,
    messages: Option<Vec<Message>>,
}

impl Corpus {
    /// Reads a file or every supported file under a directory (sorted, recursive).
    pub fn load(path: &Path) -> Result<Corpus> {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        if files.is_empty() {
            return Err(ModelError::file(path, "no .txt, .md or .jsonl files found"));
        }
        let mut corpus = Corpus::default();
        for f in &files {
            corpus.read_file(f)?;
        }
        corpus.files = files;
        Ok(corpus)
    }

    fn read_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| ModelError::Utf8 {
            file: path.to_path_buf(),
            offset: e.valid_up_to(),
        })?;
        if path.extension().is_some_and(|e| e == "jsonl") {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = |m: String| ModelError::file(path, format!("line {}: {m}", i + 1));
                let row: JsonLine = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
                let ex = match (row.question, row.answer, row.messages) {
                    (Some(q), Some(a), None) => Example::Chat(vec![
                        Message::new(Role::User, q),
                        Message::new(Role::Assistant, a),
                    ]),
                    (None, None, Some(ms)) if !ms.is_empty() => Example::Chat(ms),
                    _ => return Err(at(
                        "expected {\"question\",\"answer\"} or a non-empty {\"messages\":[...]}"
                            .into(),
                    )),
                };
                self.examples.push(ex);
            }
        } else {
            self.examples
                .extend(chunk_text(text).into_iter().map(Example::Text));
        }
        Ok(())
    }

    /// Question/answer probes (a user turn followed by an assistant turn) among `examples`:
    /// the held-out ones measure what the model can answer.
    pub fn probes(examples: &[Example]) -> Vec<super::policy::Probe> {
        examples
            .iter()
            .filter_map(|e| match e {
                Example::Chat(ms) => match ms.as_slice() {
                    [q, a, ..] if q.role == Role::User && a.role == Role::Assistant => {
                        Some(super::policy::Probe {
                            question: q.content.clone(),
                            answer: a.content.clone(),
                        })
                    }
                    _ => None,
                },
                Example::Text(_) => None,
            })
            .collect()
    }

    /// Splits into (train, held-out) by a stable hash of each example.
    pub fn split(&self, heldout: f64) -> (Vec<Example>, Vec<Example>) {
        let cut = (heldout.clamp(0.0, 1.0) * 10_000.0) as u64;
        self.examples
            .iter()
            .cloned()
            .partition(|e| e.key() % 10_000 >= cut)
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| ModelError::file(path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| ModelError::file(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "jsonl" || TEXT_EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Cuts a document into chunks of at most ~[`CHUNK_CHARS`] at blank lines.
fn chunk_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if !cur.is_empty() && cur.len() + para.len() > CHUNK_CHARS {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(para);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Examples packed into windows of `seq_len + 1` tokens: inputs are the first `seq_len`,
/// targets the last `seq_len` (with [`IGNORE_INDEX`] where the mask says "do not learn").
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub seq_len: usize,
    pub inputs: Vec<Vec<u32>>,
    pub targets: Vec<Vec<u32>>,
}

impl Windows {
    pub fn pack(examples: &[Example], tok: &ThauTokenizer, seq_len: usize) -> Result<Windows> {
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for ex in examples {
            let (i, m) = ex.encode(tok)?;
            ids.extend(i);
            mask.extend(m);
        }
        let mut w = Windows {
            seq_len,
            inputs: Vec::new(),
            targets: Vec::new(),
        };
        let mut start = 0;
        while start + 1 < ids.len() {
            let end = (start + seq_len + 1).min(ids.len());
            let mut inp: Vec<u32> = ids[start..end - 1].to_vec();
            let mut tgt: Vec<u32> = (start + 1..end)
                .map(|j| if mask[j] == 1 { ids[j] } else { IGNORE_INDEX })
                .collect();
            inp.resize(seq_len, tok.special.pad);
            tgt.resize(seq_len, IGNORE_INDEX);
            if tgt.iter().any(|&t| t != IGNORE_INDEX) {
                w.inputs.push(inp);
                w.targets.push(tgt);
            }
            start += seq_len;
        }
        Ok(w)
    }

    /// [`Windows::pack`] for the plain-text examples, while every conversation gets
    /// windows of its own (padded), starting at its first turn: at inference a
    /// conversation is answered with nothing before it, and packed behind unrelated
    /// examples the model would learn its replies with them in context.
    pub fn pack_chats_apart(
        examples: &[Example],
        tok: &ThauTokenizer,
        seq_len: usize,
    ) -> Result<Windows> {
        let (chats, texts): (Vec<&Example>, Vec<&Example>) =
            examples.iter().partition(|e| matches!(e, Example::Chat(_)));
        let texts: Vec<Example> = texts.into_iter().cloned().collect();
        let mut w = Windows::pack(&texts, tok, seq_len)?;
        for chat in chats {
            let one = Windows::pack(std::slice::from_ref(chat), tok, seq_len)?;
            w.inputs.extend(one.inputs);
            w.targets.extend(one.targets);
        }
        Ok(w)
    }

    /// One window per example (cut at `seq_len`, padded): a batch of these trains on
    /// exactly those examples, as the Learner needs for gap items.
    pub fn each(examples: &[Example], tok: &ThauTokenizer, seq_len: usize) -> Result<Windows> {
        let mut w = Windows {
            seq_len,
            inputs: Vec::new(),
            targets: Vec::new(),
        };
        for ex in examples {
            let one = Windows::pack(std::slice::from_ref(ex), tok, seq_len)?;
            // The first window holds the start of the example (the question and, for short
            // items, the whole answer).
            if let (Some(i), Some(t)) = (
                one.inputs.into_iter().next(),
                one.targets.into_iter().next(),
            ) {
                w.inputs.push(i);
                w.targets.push(t);
            }
        }
        Ok(w)
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Tokens up to and including the last learned target of window `i` (at least 1):
    /// what is left after it is padding, or context nothing is learned from.
    pub fn learned_len(&self, i: usize) -> usize {
        self.targets[i]
            .iter()
            .rposition(|&t| t != IGNORE_INDEX)
            .map_or(1, |p| p + 1)
    }

    /// Tensors `[B, T]` (inputs, targets) of the given windows, cut after the last learned
    /// target of the longest one (`T ≤ seq_len`). Exact: attention is causal, so the cut
    /// positions influence nothing that is learned, and a batch of short chats costs its
    /// own length, not the window's.
    pub fn batch(&self, idx: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
        let b = idx.len();
        let t = idx
            .iter()
            .map(|&i| self.learned_len(i))
            .max()
            .unwrap_or(self.seq_len)
            .min(self.seq_len);
        let inp: Vec<u32> = idx
            .iter()
            .flat_map(|&i| self.inputs[i][..t].iter().copied())
            .collect();
        let tgt: Vec<u32> = idx
            .iter()
            .flat_map(|&i| self.targets[i][..t].iter().copied())
            .collect();
        // [B, T] each
        Ok((
            Tensor::from_vec(inp, (b, t), dev)?,
            Tensor::from_vec(tgt, (b, t), dev)?,
        ))
    }
}

/// Serves window indices in a shuffled order that depends only on (seed, epoch), so a
/// resumed run continues exactly where it stopped.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Batcher {
    pub seed: u64,
    pub epoch: u64,
    pub cursor: usize,
    #[serde(skip)]
    order: Vec<usize>,
}

impl Batcher {
    pub fn new(seed: u64) -> Self {
        Batcher {
            seed,
            epoch: 0,
            cursor: 0,
            order: Vec::new(),
        }
    }

    fn shuffle(&mut self, n: usize) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ self.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.order = (0..n).collect();
        self.order.shuffle(&mut rng);
    }

    /// The next `b` window indices out of `n`.
    pub fn next(&mut self, b: usize, n: usize) -> Vec<usize> {
        if self.order.len() != n {
            self.shuffle(n);
        }
        (0..b)
            .map(|_| {
                if self.cursor >= n {
                    self.epoch += 1;
                    self.cursor = 0;
                    self.shuffle(n);
                }
                self.cursor += 1;
                self.order[self.cursor - 1]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_reported_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.txt");
        std::fs::write(&f, b"hola \xff mundo").unwrap();
        let err = Corpus::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.txt") && err.contains("byte 5"), "{err}");
    }

    #[test]
    fn jsonl_rows_become_conversations_and_bad_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("qa.jsonl");
        std::fs::write(&f, "{\"question\":\"¿Qué?\",\"answer\":\"Eso.\"}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n").unwrap();
        let c = Corpus::load(&f).unwrap();
        assert_eq!(c.examples.len(), 2);
        std::fs::write(
            &f,
            "{\"question\":\"x\",\"answer\":\"y\"}\n{\"question\":3}\n",
        )
        .unwrap();
        let err = Corpus::load(&f).unwrap_err().to_string();
        assert!(err.contains("qa.jsonl") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn batcher_order_depends_only_on_seed_and_position() {
        let mut a = Batcher::new(7);
        let first: Vec<usize> = (0..5).flat_map(|_| a.next(3, 10)).collect();
        let mut b = Batcher::new(7);
        b.next(3, 10);
        b.next(3, 10);
        let mut resumed: Batcher =
            serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let rest: Vec<usize> = (0..3).flat_map(|_| resumed.next(3, 10)).collect();
        assert_eq!(&first[6..], &rest[..]);
        let mut seen = first[..10].to_vec();
        seen.sort();
        assert_eq!(
            seen,
            (0..10).collect::<Vec<_>>(),
            "an epoch visits every window once"
        );
    }

    #[test]
    fn conversations_apart_start_their_own_windows_and_text_stays_packed() {
        let text = "the fox runs in the snow and the whale swims in the sea. ".repeat(4);
        let tok = ThauTokenizer::train(std::iter::once(text.clone()), 300).unwrap();
        let chat = |q: &str, a: &str| {
            Example::Chat(vec![
                Message::new(Role::User, q),
                Message::new(Role::Assistant, a),
            ])
        };
        let examples = vec![
            Example::Text(text.clone()),
            chat("the fox", "runs"),
            Example::Text(text),
            chat("the whale", "swims in the sea"),
        ];
        let seq = 32;
        let apart = Windows::pack_chats_apart(&examples, &tok, seq).unwrap();
        let packed = Windows::pack(&examples, &tok, seq).unwrap();
        let user = tok.special.user;
        let starts = |w: &Windows| w.inputs.iter().filter(|i| i[0] == user).count();
        // Each conversation opens a window with its user turn; packed, they sit mid-window.
        assert_eq!(starts(&apart), 2);
        assert_eq!(starts(&packed), 0);
        // Every window of a conversation holds that conversation only, then padding.
        for (inp, tgt) in apart.inputs.iter().zip(&apart.targets) {
            if inp[0] == user {
                let len = inp
                    .iter()
                    .position(|&t| t == tok.special.pad)
                    .unwrap_or(seq);
                assert!(inp[len..].iter().all(|&t| t == tok.special.pad));
                assert!(tgt[len..].iter().all(|&t| t == IGNORE_INDEX));
                assert_eq!(inp.iter().filter(|&&t| t == user).count(), 1);
            }
        }
        // The learned tokens are the same, only laid out differently.
        let learned = |w: &Windows| -> usize {
            w.targets
                .iter()
                .flatten()
                .filter(|&&t| t != IGNORE_INDEX)
                .count()
        };
        let (a, p) = (learned(&apart), learned(&packed));
        assert!(a + 2 >= p && a <= p + 2, "{a} vs {p}");
    }
}
