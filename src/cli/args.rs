//! The command line: every command, flag, help text, default and value name of `thau`
//! (clap derive). The commands themselves are in the sibling modules; this file only
//! says what they take.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use thau::config::Override;

#[derive(Parser, Debug)]
#[command(name = "thau", version, about = "THAU: a language model trained from scratch that keeps learning on its own", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Data directory (default: $THAU_HOME, else ./thau-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Override a configuration key for this run, e.g. `--set model.vocab_size=4096`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_override)]
    pub set: Vec<Override>,
    /// Keep long-term memory in this Qdrant server or cluster (gRPC URL, e.g.
    /// http://localhost:6334) instead of the embedded store.
    #[arg(long, global = true, env = "THAU_QDRANT_URL", value_name = "URL")]
    pub qdrant_url: Option<String>,
}

fn parse_override(s: &str) -> std::result::Result<Override, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    Ok(Override {
        key: k.trim().to_string(),
        value: v.to_string(),
    })
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory with a default configuration (idempotent).
    Init,
    /// Show actors (running, restarts), the model and the stores.
    Status,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Model information.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Train the model on a corpus (resumes the age's newest checkpoint if there is one).
    Train(TrainArgs),
    /// Held-out loss and perplexity of the newest (or a given) checkpoint; `thau eval
    /// answers`: answer accuracy on held-out questions, with memory, closed-book and a
    /// retrieval-only baseline.
    Eval(EvalArgs),
    /// Generate text with the newest checkpoint, streamed as it is produced.
    Generate(GenerateArgs),
    /// Benchmarks: training and decoding speed against PyTorch (and llama.cpp), growth FLOPs.
    Bench(BenchArgs),
    /// Export the model for llama.cpp and Ollama (GGUF) or Hugging Face (`export hf`).
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Bring a model trained elsewhere back: `thau import hf DIR` reads a Hugging Face
    /// checkpoint of THAU's shapes into a checkpoint of the matching age.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Inspect and manage what THAU remembers: short-term windows, episodes (SQLite) and
    /// long-term vectors (Qdrant).
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
    /// A self-learning session: THAU asks itself questions about the corpus, finds what it
    /// does not know from its own loss, and trains on it (Ctrl-C stops cleanly; a rerun
    /// resumes from the newest checkpoint).
    Learn(LearnArgs),
    /// Every learning session: questions, gaps opened and closed, probe loss before/after.
    Stats(StatsArgs),
    /// Serve the HTTP API (chat, memory, vision, training feedback, metrics) until Ctrl-C.
    /// Mutating routes need $THAU_API_KEY when it is set.
    Serve(ServeArgs),
    /// Chat in the terminal: answers stream as they are decoded; /memory, /tools,
    /// /feedback up|down, /save, /history, /quit. Reads stdin, so it can be scripted.
    Chat(ChatArgs),
    /// Tools the model may call (`<TOOL:name>{json}</TOOL>`): list them, or run one directly.
    Tool {
        #[command(subcommand)]
        command: ToolCommand,
    },
    /// Rate a chat turn, thumbs up or down: feedback for auto-tuning (while no runtime
    /// runs; a running server takes it through its API).
    Feedback(FeedbackArgs),
    /// Auto-tuning: the knobs' values (learning rate, temperature, gap percentile) and the
    /// log of every change with its reason; `thau tune revert ID` undoes one.
    Tune {
        #[command(subcommand)]
        command: Option<TuneCommand>,
    },
    /// Replay scenario files (scenarios/*.toml): scripted conversations, memory checks and
    /// learning steps with expectations, each in a fresh data directory (or --home), the
    /// same way every time for its seed. Exit 0 when all pass, 1 when one fails, 2 when a
    /// file is malformed.
    Replay(ReplayArgs),
    /// Grow the newest model to a later age, exactly (the grown model computes the same
    /// function); `thau train --age AGE` then continues from it.
    Grow(GrowArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; 0.0.0.0 exposes THAU to the network).
    #[arg(long, default_value = thau::server::DEFAULT_ADDR)]
    pub addr: std::net::SocketAddr,
    /// Learn while serving: learning sessions run in the server, and new weights reach
    /// chat after every training round (also `[server] learn = true`).
    #[arg(long)]
    pub learn: bool,
    /// What the background learning learns from (default: `[server] learn_corpus`).
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Name the conversation (a new name by default): its short-term window, its episodes
    /// and /save go by it.
    #[arg(long)]
    pub session: Option<String>,
    /// Longest answer, in tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sampling seed (turn i uses SEED + i), for reproducible chats.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Answer from the weights alone: no memories recalled into prompts.
    #[arg(long)]
    pub no_memory: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Scenario files, or directories of them (their *.toml files, by name).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also write a JUnit XML report (a suite per scenario, a case per step).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write what actually happened as a new scenario (one scenario only).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Write every scenario's transcript (JSON), to compare replays byte for byte.
    #[arg(long, value_name = "FILE")]
    pub transcript: Option<PathBuf>,
    /// Replay against a running `thau serve` through its WebSocket (ws://HOST:PORT);
    /// $THAU_API_KEY is sent when set.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Also draw the loss and gap curves of every session into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FeedbackArgs {
    /// The rated turn: its episode id (see `thau memory list --store episodic`) or your own.
    pub turn: String,
    /// up or down.
    #[arg(value_parser = parse_rating)]
    pub rating: thau::learn::tuning::Rating,
    /// Why, in a few words (kept with the feedback episode).
    #[arg(long)]
    pub note: Option<String>,
}
fn parse_rating(s: &str) -> std::result::Result<thau::learn::tuning::Rating, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum ToolCommand {
    /// The tools' manifests (name, description, argument schema).
    List,
    /// Run a tool with JSON arguments checked against its schema, e.g.
    /// `thau tool run generate_image '{"prompt":"un faro al atardecer"}'`.
    Run {
        name: String,
        /// The arguments, a JSON object.
        arguments: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TuneCommand {
    /// Undo a change: its knob goes back to the value before it (the undo is logged too).
    Revert {
        /// The change's id, from `thau tune`.
        id: u64,
    },
}

#[derive(Args, Debug)]
pub struct LearnArgs {
    /// Stop after this many minutes, setup and the accuracy samples included (default: when
    /// every item has been asked).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Stop after this many questions.
    #[arg(long)]
    pub questions: Option<usize>,
    /// The knowledge to learn from: qa.jsonl, .md and .txt files.
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    pub corpus: PathBuf,
    /// Seed for question order and a fresh model's initialisation (default: the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A teacher LLM that proposes new items: ollama:MODEL@URL or openai:MODEL@URL (key
    /// from $THAU_TEACHER_API_KEY or $OPENAI_API_KEY).
    #[arg(long, value_name = "SPEC", value_parser = parse_teacher)]
    pub teacher: Option<thau::learn::teacher::TeacherSpec>,
    /// Start a new session even if an interrupted one (killed, crashed) could be resumed;
    /// by default it is resumed.
    #[arg(long)]
    pub new_session: bool,
    /// Questions whose answers are scored before and after the session (the `thau eval
    /// answers` format; default data/eval/qa_heldout.jsonl when it exists).
    #[arg(long, value_name = "FILE.jsonl")]
    pub accuracy_qa: Option<PathBuf>,
    /// How many of them (a fixed sample, the same every session); 0 skips the check.
    #[arg(long, default_value_t = 24)]
    pub accuracy_sample: usize,
}

fn parse_teacher(s: &str) -> std::result::Result<thau::learn::teacher::TeacherSpec, String> {
    s.parse()
}

/// Which memory store a command concerns (all of them when omitted).
#[derive(Args, Debug, Clone)]
pub struct StoreArg {
    /// short (conversation windows), episodic (SQLite) or long (vectors).
    #[arg(long, value_enum)]
    pub store: Option<thau::memory::StoreKind>,
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// Counts per store: conversations, episodes by kind, points and index coverage.
    Stats(StoreArg),
    /// The newest entries, newest first.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Most entries to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Entries to skip (paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Only this conversation/session (long-term: this source).
        #[arg(long)]
        session: Option<String>,
        /// Only episodes of this kind (chat_turn, question, answer, gap, gap_closed,
        /// training_run, growth, tool_call, feedback).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Search one store, or all of them merged by score (plain words; not a query language).
    Search {
        query: String,
        #[command(flatten)]
        store: StoreArg,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Long-term only: points from this source.
        #[arg(long)]
        source: Option<String>,
        /// Long-term only: points at least this important (0..1).
        #[arg(long)]
        min_importance: Option<f32>,
    },
    /// One entry in full: an episode or point id (UUID), or a conversation name.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Delete an episode, a point, or a whole conversation window.
    Forget {
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Write the stores as JSONL (one record per line, tagged with its store; long-term
    /// points carry their vectors).
    Export {
        #[command(flatten)]
        store: StoreArg,
        /// Output file (written atomically); standard output when omitted.
        #[arg(short, long, value_name = "FILE.jsonl")]
        output: Option<PathBuf>,
    },
    /// Remember plain text: TEXT and/or documents (--file: a .md/.txt file, or a directory
    /// of them) are split into passages and stored in long-term memory, where chat recalls
    /// them at once. Passages already stored are skipped; unreadable documents are refused
    /// with the reason while the rest is stored.
    Add {
        /// The text to remember.
        text: Option<String>,
        /// A document or a directory of documents (repeatable).
        #[arg(long, value_name = "PATH")]
        file: Vec<PathBuf>,
        /// Where TEXT comes from (default `cli`); documents are named by their path.
        #[arg(long)]
        source: Option<String>,
    },
    /// Read a JSONL export back (every line is checked before anything is written).
    Import {
        /// The file to read (`-` for standard input).
        input: PathBuf,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Write a GGUF file (architecture `llama`) with the tokenizer and chat template.
    Gguf {
        /// Export the newest checkpoint of this age (default: the newest of all).
        #[arg(long, conflicts_with = "checkpoint")]
        age: Option<u32>,
        /// Export this checkpoint directory.
        #[arg(long, value_name = "DIR")]
        checkpoint: Option<PathBuf>,
        /// Weight format (norm gains stay f32; q4_k falls back to q4_0 per tensor when a
        /// dimension is not a multiple of 256).
        #[arg(long = "type", value_enum, default_value_t = GgufType::F16)]
        weight_type: GgufType,
        /// Output file.
        #[arg(short, long, value_name = "FILE.gguf")]
        output: PathBuf,
        /// Load the file back with candle-transformers' quantized_llama and compare its
        /// logits with the native model's.
        #[arg(long)]
        verify: bool,
        /// Also write the native model's logits and greedy continuations of a few fixed
        /// texts (what bench/llamacpp_compare.py compares llama.cpp against).
        #[arg(long, value_name = "FILE.json")]
        reference: Option<PathBuf>,
    },
    /// Write a Hugging Face `LlamaForCausalLM` checkpoint (config.json, model.safetensors,
    /// tokenizer files with the chat template, generation_config.json) that `transformers`
    /// loads and distributed trainers continue; `thau import hf` reads it back.
    Hf {
        /// Export the newest checkpoint of this age (default: the newest of all).
        #[arg(long, conflicts_with = "checkpoint")]
        age: Option<u32>,
        /// Export this checkpoint directory.
        #[arg(long, value_name = "DIR")]
        checkpoint: Option<PathBuf>,
        /// Output directory (created if missing).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Also write the native model's logits on a few fixed texts (what
        /// scripts/hf_check.py compares `transformers` against).
        #[arg(long, value_name = "FILE.json")]
        reference: Option<PathBuf>,
    },
    /// Write an Ollama Modelfile for an exported GGUF file.
    Modelfile {
        /// The GGUF file, relative to the Modelfile.
        #[arg(long, value_name = "FILE.gguf", default_value = "thau.gguf")]
        gguf: String,
        /// Output file (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// A Hugging Face `LlamaForCausalLM` directory (`thau export hf`'s layout, e.g. after
    /// training elsewhere), checked file by file before anything is written.
    Hf {
        /// The directory holding config.json, model.safetensors and tokenizer.json.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum GgufType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_k")]
    Q4K,
}

impl From<GgufType> for thau::export::ExportType {
    fn from(t: GgufType) -> Self {
        use thau::export::ExportType;
        match t {
            GgufType::F32 => ExportType::F32,
            GgufType::F16 => ExportType::F16,
            GgufType::Q8_0 => ExportType::Q8_0,
            GgufType::Q4_0 => ExportType::Q4_0,
            GgufType::Q4K => ExportType::Q4K,
        }
    }
}

#[derive(Args, Debug)]
pub struct GrowArgs {
    /// The age to grow to (1, 3, 6, 12 or 15).
    #[arg(long)]
    pub to: u32,
    /// Where new layers go.
    #[arg(long, value_enum, default_value_t = PlacementArg::Interleave)]
    pub placement: PlacementArg,
}

/// `--placement` values (the model module does not depend on clap).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PlacementArg {
    /// Spread new layers evenly between the old ones.
    Interleave,
    /// Put new layers on top.
    End,
    /// Copy existing layers into the new ones (not exact; for comparison).
    Stack,
}

impl From<PlacementArg> for thau::model::growth::Placement {
    fn from(p: PlacementArg) -> Self {
        use thau::model::growth::Placement;
        match p {
            PlacementArg::Interleave => Placement::Interleave,
            PlacementArg::End => Placement::End,
            PlacementArg::Stack => Placement::Stack,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// The shape and parameter count of every age.
    Ages,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A corpus: a .txt/.md/.jsonl file or a directory of them.
    #[arg(long, value_name = "PATH", default_value = "data/corpus")]
    pub data: PathBuf,
    /// Age to train (default: model.age from the configuration).
    #[arg(long)]
    pub age: Option<u32>,
    /// Optimizer steps to run.
    #[arg(long, conflicts_with = "minutes")]
    pub steps: Option<u64>,
    /// Minutes to train (the schedule is sized to fit).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Seed for initialisation and data order (default: seed from the configuration).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 30)]
    pub warmup: u64,
    /// Start a new model even if the age has a checkpoint.
    #[arg(long)]
    pub fresh: bool,
    /// Train on a dataset (a name in data/datasets/, e.g. `tool_calling`, or a .json path)
    /// mixed with replay of `--data`.
    #[arg(long, value_name = "NAME|PATH")]
    pub dataset: Option<String>,
    /// With --dataset: the share of each epoch drawn from `--data` (replay).
    #[arg(long, default_value_t = 0.5)]
    pub replay: f64,
    /// With --dataset: how many times the dataset appears in each epoch.
    #[arg(long, default_value_t = 4)]
    pub dataset_repeat: usize,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    /// The corpus whose held-out split is scored.
    #[arg(long, value_name = "PATH", default_value = "data/corpus")]
    pub data: PathBuf,
    /// A checkpoint directory (default: the newest).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Most held-out batches to score.
    #[arg(long, default_value_t = 64)]
    pub max_batches: usize,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Ask every question of a QA file through the chat path (greedy, a fresh conversation
    /// each) and score the answers: with memory, closed-book, and the best retrieved
    /// sentence with no model; overall and per language, with recall@3 of the passage that
    /// holds the answer.
    Answers(EvalAnswersArgs),
}

#[derive(Args, Debug)]
pub struct EvalAnswersArgs {
    /// JSONL questions: `question`, `expect` (spans, any of which shows the fact),
    /// optional `answer`, `lang`.
    #[arg(
        long,
        value_name = "FILE.jsonl",
        default_value = "data/eval/qa_heldout.jsonl"
    )]
    pub qa: PathBuf,
    /// Only the closed-book answers (the weights alone).
    #[arg(long)]
    pub closed_book: bool,
    /// Ask a running `thau serve` (http://HOST:PORT) instead of a runtime in this process.
    #[arg(long)]
    pub url: Option<String>,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// Ask only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt. Answered as a user message unless --raw.
    pub prompt: String,
    /// Continue the prompt as plain text instead of answering it as a chat turn.
    #[arg(long)]
    pub raw: bool,
    /// Answer from the weights alone: no memories recalled into the prompt.
    #[arg(long)]
    pub no_memory: bool,
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Chat with a `llama`-architecture GGUF file instead of the newest checkpoint
    /// (THAU's export, or e.g. TinyLlama with its tokenizer.json beside it).
    #[arg(long, value_name = "FILE.gguf")]
    pub gguf: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub what: BenchKind,
    /// serve: concurrent sessions of each round.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub sessions: Vec<usize>,
    /// load: WebSocket sessions held open at once.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// load: how long the sessions chat.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// load: tokens of each answer.
    #[arg(long, default_value_t = 16)]
    pub turn_tokens: usize,
    /// Timed training steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Decoded tokens.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// decode: also time llama.cpp on the same model exported as f32 GGUF
    /// (needs llama-cpp-python; see bench/llamacpp_compare.py).
    #[arg(long)]
    pub llamacpp: bool,
    /// grow: steps at age 0 before growing, and at age 1 after.
    #[arg(long, default_value_t = 60)]
    pub steps_before: u64,
    #[arg(long, default_value_t = 60)]
    pub steps_after: u64,
    /// grow: steps of the age-1 model trained from scratch.
    #[arg(long, default_value_t = 120)]
    pub scratch_steps: u64,
    /// grow: held-out evaluation every this many steps.
    #[arg(long, default_value_t = 10)]
    pub eval_every: u64,
    /// grow: also run the (non-exact) stacking operator.
    #[arg(long)]
    pub stack: bool,
    /// memory, recall: points loaded into the embedded vector store.
    #[arg(long, default_value_t = 100_000)]
    pub points: usize,
    /// memory: values per vector.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// memory: timed searches (top 10).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// memory: how the vectors are drawn.
    #[arg(long, value_enum, default_value_t = thau::memory::bench::VectorData::Texts)]
    pub data: thau::memory::bench::VectorData,
    /// memory (--data texts): corpus whose sentences make the texts.
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    pub corpus: PathBuf,
    /// embed: folder searched for qa.jsonl files (the labelled retrieval set).
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    pub qa: PathBuf,
    /// embed: also score this sentence-transformer directory (BERT family).
    #[arg(long, value_name = "DIR")]
    pub bert: Option<PathBuf>,
    /// learn, serve, load: seed of initialisation and data order, in place of the
    /// configuration's `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// learn: training steps per arm.
    #[arg(long, default_value_t = 300)]
    pub learn_steps: u64,
    /// learn: held-out evaluation every this many steps.
    #[arg(long, default_value_t = 25)]
    pub learn_eval_every: u64,
    /// learn: share of each gap-steered batch drawn uniformly (the Learner's replay).
    #[arg(long, default_value_t = 0.25)]
    pub learn_replay: f64,
    /// learn: candidates scored per gap row.
    #[arg(long, default_value_t = 4)]
    pub learn_pool: usize,
    /// learn: how candidates are ranked: mean NLL per answer token, or the answer's total
    /// NLL (what is left to learn in it).
    #[arg(long, value_enum, default_value_t = thau::learn::bench::GapScore::Total)]
    pub learn_score: thau::learn::bench::GapScore,
    /// learn: steps an item trained as a gap rests before it may be picked again (0: no
    /// rest).
    #[arg(long, default_value_t = 100)]
    pub learn_cooldown: u64,
    /// learn: start both arms from a model first trained on this share of the items (0:
    /// from scratch).
    #[arg(long, default_value_t = 0.5)]
    pub learn_known: f64,
    /// learn: steps of that warm-up.
    #[arg(long, default_value_t = 1500)]
    pub learn_warm: u64,
    /// tools: the held-out prompts (image requests and ordinary ones).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "data/eval/tool_heldout.json"
    )]
    pub tool_eval: PathBuf,
    /// tools: the span bias of the constrained run (`span_bias` in `agents/inference.toml`).
    #[arg(long, default_value_t = thau::model::generate::DEFAULT_SPAN_BIAS)]
    pub span_bias: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BenchKind {
    Train,
    Decode,
    /// Growth 0 → 1 against training age 1 from scratch: FLOPs to the same held-out loss.
    Grow,
    /// The embedded vector store: insert rate, search p50/p99, recall@10 vs brute force.
    Memory,
    /// Embedders on the labelled retrieval set (paraphrase → answer): recall@1/5, MRR.
    Embed,
    /// Hybrid recall (vectors + BM25, what chat runs) over `--points` text memories,
    /// timed on the held-out questions against vector search alone (goal: p50 ≤ 20 ms).
    Recall,
    /// Training against PyTorch and batch-1 decode against llama.cpp (on THAU's exported
    /// GGUF) in one run, each ratio marked against its goal (≥ 1.0×).
    Speed,
    /// Gap-steered training against uniform sampling of the same items, same steps:
    /// held-out paraphrase loss curves and the step ratio to uniform's final loss.
    Learn,
    /// Tool calling of the newest checkpoint on held-out prompts: image requests that get a
    /// schema-valid call (goal ≥ 90%), ordinary prompts that wrongly get one (goal ≤ 5%).
    Tools,
    /// Concurrent WebSocket chats against a local server (the data directory's model, else
    /// an untrained age-0 one): aggregate tokens/s and time to first token for each
    /// `--sessions` count, and the ratio to the first (goal: 32 sessions ≥ 6× one).
    Serve,
    /// `--clients` WebSocket sessions chatting turn after turn for `--seconds` against a
    /// local server: sessions held, errors, turns/s and turn latency p50/p99.
    Load,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < thau.toml < THAU_* < --set).
    Show,
}
