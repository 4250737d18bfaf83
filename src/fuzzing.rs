//! Fuzz targets: one function per untrusted-input parser, each taking raw bytes and
//! required never to panic (an `Err` is the right answer to garbage). The `cargo fuzz`
//! crate in `fuzz/` calls them from libFuzzer, and `tests/fuzz.rs` replays the kept
//! regression inputs (`fuzz/regressions/<target>/`) and a seeded random sweep through the
//! very same functions, so a crash once found stays fixed.
//!
//! Targets ([`TARGETS`]): [`tool_calls`] (the streaming `<TOOL:…>` parser), [`scenario`]
//! (replay files), [`config`] (`thau.toml`), [`checkpoint`] (a checkpoint directory) and
//! [`gguf`] (an exported model). The file loaders read from disk, so their targets write
//! the input into a scratch directory beside a valid [`Fixture`] model first. Their input
//! either replaces one file whole or patches the fixture's bytes, so the fuzzer explores
//! both garbage and almost-valid files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::model::checkpoint;
use crate::model::config::ModelConfig;
use crate::model::tokenizer::ThauTokenizer;
use crate::tools::parser::{ParseEvent, ToolCallParser};

/// Every target's name, as `cargo fuzz run NAME` knows it.
pub const TARGETS: [&str; 5] = ["tool_calls", "scenario", "config", "checkpoint", "gguf"];

/// Called once by each libFuzzer target before the first input. libfuzzer-sys installs a
/// panic hook that aborts at once, so that even a panic the code under test catches on
/// purpose (third-party parsers run under `catch_unwind`, which turns their panics into
/// errors) would count as a crash. This hook only prints: a panic that escapes the target
/// still aborts, in libfuzzer-sys's own wrapper, and is reported as a crash.
pub fn init() {
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
}

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "tool_calls" => tool_calls(data),
        "scenario" => scenario(data),
        "config" => config(data),
        "checkpoint" => checkpoint(data),
        "gguf" => gguf(data),
        _ => return false,
    }
    true
}

/// The streaming tool-call parser. Beyond not panicking, feeding the text in pieces (cut
/// where the first input byte says) must find the same calls and the same text as
/// parsing it whole.
pub fn tool_calls(data: &[u8]) {
    let Some((&cut_seed, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let whole = ToolCallParser::parse_all(&text);
    let mut p = ToolCallParser::default();
    let mut pieces = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let step = usize::from(cut_seed % 7) + 1;
    for chunk in chars.chunks(step) {
        pieces.extend(p.push(&chunk.iter().collect::<String>()));
    }
    pieces.extend(p.finish());
    let summary = |events: &[ParseEvent]| {
        let mut text = String::new();
        let mut rest = Vec::new();
        for e in events {
            match e {
                ParseEvent::Text(t) => text.push_str(t),
                other => rest.push(other.clone()),
            }
        }
        (text, rest)
    };
    assert_eq!(
        summary(&whole),
        summary(&pieces),
        "streamed parse differs from whole parse"
    );
}

/// A replay scenario file.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::replay::scenario::Scenario::parse(Path::new("fuzz.toml"), text);
    }
}

/// `thau.toml`, through the layered loader (file, then environment, then flags).
pub fn config(data: &[u8]) {
    let dir = scratch("config");
    if std::fs::write(dir.join(crate::config::CONFIG_FILE), data).is_ok() {
        let _ = crate::config::ThauConfig::load(&dir, Vec::new(), &[]);
    }
}

/// The files of a checkpoint directory the fuzzer may rewrite, in selector order.
const CHECKPOINT_FILES: [&str; 4] = [
    checkpoint::CONFIG,
    checkpoint::TOKENIZER,
    checkpoint::WEIGHTS,
    checkpoint::TRAINER,
];

/// A checkpoint directory. The first byte picks the file (and whether the rest replaces
/// it or patches the fixture's copy); a checkpoint that loads must also run a forward pass.
pub fn checkpoint(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let fx = Fixture::get();
    let dir = scratch("checkpoint");
    for name in CHECKPOINT_FILES {
        if std::fs::copy(fx.checkpoint.join(name), dir.join(name)).is_err() {
            return;
        }
    }
    let target = CHECKPOINT_FILES[usize::from(sel) % CHECKPOINT_FILES.len()];
    let seed = std::fs::read(fx.checkpoint.join(target)).unwrap_or_default();
    let bytes = mutate(&seed, sel, rest);
    if std::fs::write(dir.join(target), bytes).is_err() {
        return;
    }
    let Ok(ck) = checkpoint::load(&dir, &Device::Cpu, true) else {
        return;
    };
    let cfg = ck.config.clone();
    let Ok(model) = crate::model::transformer::from_tensors(ck.weights, &cfg, &Device::Cpu) else {
        return;
    };
    if let Ok(ids) = Tensor::new(&[[0u32, 1]], &Device::Cpu) {
        let _ = model.forward(&ids, None);
    }
}

/// A GGUF file (the selector byte says replace or patch the fixture's export); a file
/// that loads must also answer a prompt.
pub fn gguf(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let fx = Fixture::get();
    let seed = std::fs::read(&fx.gguf).unwrap_or_default();
    let path = scratch("gguf").join("model.gguf");
    if std::fs::write(&path, mutate(&seed, sel, rest)).is_err() {
        return;
    }
    if let Ok(mut m) = crate::model::gguf::GgufModel::load(&path) {
        let params = crate::model::generate::SamplingParams {
            max_new_tokens: 2,
            temperature: 0.0,
            ..Default::default()
        };
        if let Ok(prompt) = m.encode("hi") {
            let _ = m.generate(&prompt, &params, &mut |_| true);
        }
    }
}

/// Bytes to try: with the selector's high bit clear, `rest` as it is; with it set, `seed`
/// patched by `rest` read as (offset u16 LE, xor byte) triples, cut to the length that
/// the selector's next bit asks for.
fn mutate(seed: &[u8], sel: u8, rest: &[u8]) -> Vec<u8> {
    if sel & 0x80 == 0 || seed.is_empty() {
        return rest.to_vec();
    }
    let mut out = seed.to_vec();
    let mut triples = rest.chunks_exact(3);
    for t in triples.by_ref() {
        let at = usize::from(u16::from_le_bytes([t[0], t[1]])) % out.len();
        out[at] ^= t[2];
    }
    if sel & 0x40 != 0 {
        // Truncated files: a crash in the middle of a write that skipped the rename.
        let cut = triples
            .remainder()
            .first()
            .map_or(out.len() / 2, |&b| out.len() * usize::from(b) / 256);
        out.truncate(cut);
    }
    out
}

/// A per-thread scratch directory for one target (libFuzzer runs one input at a time).
fn scratch(target: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "thau-fuzz-{}-{:?}-{target}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A valid tiny model, made once per process: a checkpoint directory and its GGUF export.
pub struct Fixture {
    pub checkpoint: PathBuf,
    pub gguf: PathBuf,
    _dir: tempfile::TempDir,
}

/// Text the fixture's tokenizer is trained on.
const FIXTURE_TEXT: &str = "the cat sat on the mat. the dog ran to the park. \
    a bird sang in the tree. hello, how are you? i am fine, thank you.";

impl Fixture {
    /// The process's fixture (built on first use).
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| Fixture::build().expect("building the fuzz fixture model"))
    }

    fn build() -> crate::model::Result<Fixture> {
        let dir = tempfile::tempdir()
            .map_err(|e| crate::model::ModelError::Data(format!("temp dir: {e}")))?;
        let texts = std::iter::repeat_n(FIXTURE_TEXT, 8);
        let tok = ThauTokenizer::train(texts, 300)?;
        let cfg = ModelConfig::tiny(tok.vocab_size());
        let varmap = crate::model::transformer::init_weights(&cfg, 7, DType::F32, &Device::Cpu)?;
        let weights = crate::model::transformer::tensors_of(&varmap)?;
        let trainer = serde_json::json!({});
        let ck_dir = checkpoint::save(dir.path(), 0, &cfg, &tok, &weights, None, Some(&trainer))?;
        let ck = checkpoint::load(&ck_dir, &Device::Cpu, false)?;
        let gguf = dir.path().join("fixture.gguf");
        crate::export::export_gguf(&ck, crate::export::ExportType::F32, &gguf)?;
        Ok(Fixture {
            checkpoint: ck_dir,
            gguf,
            _dir: dir,
        })
    }
}
