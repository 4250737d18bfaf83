//! Helpers shared by the integration tests: a tiny corpus, tokenizer, model shape and
//! training options in one call.

use std::path::Path;

use thau::model::data::Corpus;
use thau::model::tokenizer::ThauTokenizer;
use thau::model::train::TrainOptions;
use thau::model::ModelConfig;

/// Vocabulary of the tokenizers trained on tiny corpora.
pub const TINY_VOCAB: usize = 300;

/// Everything a tiny training run needs (not every test binary reads every field).
#[allow(dead_code)]
pub struct Tiny {
    pub corpus: Corpus,
    pub tok: ThauTokenizer,
    pub cfg: ModelConfig,
    pub opts: TrainOptions,
}

/// Writes `files` (name, content) into `dir` and prepares a tiny model over them:
/// a [`TINY_VOCAB`]-token tokenizer, [`ModelConfig::tiny`] with `max_seq_len`, and options
/// for windows of `seq_len` tokens without a held-out split (tests set the rest).
pub fn tiny(dir: &Path, files: &[(&str, String)], max_seq_len: usize, seq_len: usize) -> Tiny {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let corpus = Corpus::load(dir).unwrap();
    let tok = ThauTokenizer::train(corpus.examples.iter().map(|e| e.text()), TINY_VOCAB).unwrap();
    let mut cfg = ModelConfig::tiny(tok.vocab_size());
    cfg.max_seq_len = max_seq_len;
    let opts = TrainOptions {
        batch_size: 4,
        seq_len,
        warmup: 5,
        heldout: 0.0,
        ..Default::default()
    };
    Tiny {
        corpus,
        tok,
        cfg,
        opts,
    }
}

/// `n` paragraphs made by `f`, separated by blank lines.
pub fn paragraphs(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(|i| f(i) + "\n\n").collect()
}
