//! The `thau` command: parses arguments, wires the library's parts together and sets the
//! exit code (0 success, 1 failure, 2 bad usage). The work lives in the library modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use thau::config::{resolve_home, Override, ThauConfig};
use thau::home::Home;
use thau::runtime::Runtime;
use thau::{Result, ThauError};

/// Training allocates and frees tensors of tens of megabytes every step; glibc's malloc
/// returns them to the kernel each time (page faults, TLB shootdowns: a third of a training
/// step here). mimalloc keeps them for reuse (for longer than its default: `thau::alloc`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a command that failed at run time.
const EXIT_FAILURE: u8 = 1;
/// Exit code of a command given bad arguments or configuration.
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "thau", version, about = "THAU: a language model trained from scratch that keeps learning on its own", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(Args, Debug, Clone)]
struct Global {
    /// Data directory (default: $THAU_HOME, else ./thau-data).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Override a configuration key for this run, e.g. `--set model.vocab_size=4096`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_override)]
    set: Vec<Override>,
    /// Keep long-term memory in this Qdrant server or cluster (gRPC URL, e.g.
    /// http://localhost:6334) instead of the embedded store.
    #[arg(long, global = true, env = "THAU_QDRANT_URL", value_name = "URL")]
    qdrant_url: Option<String>,
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
enum Command {
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
    /// Held-out loss and perplexity of the newest (or a given) checkpoint.
    Eval(EvalArgs),
    /// Generate text with the newest checkpoint, streamed as it is produced.
    Generate(GenerateArgs),
    /// Benchmarks: training and decoding speed against PyTorch (and llama.cpp), growth FLOPs.
    Bench(BenchArgs),
    /// Export the model for llama.cpp and Ollama.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
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
struct ServeArgs {
    /// Address to listen on (loopback by default; 0.0.0.0 exposes THAU to the network).
    #[arg(long, default_value = thau::server::DEFAULT_ADDR)]
    addr: std::net::SocketAddr,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// Name the conversation (a new name by default): its short-term window, its episodes
    /// and /save go by it.
    #[arg(long)]
    session: Option<String>,
    /// Longest answer, in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Sampling seed (turn i uses SEED + i), for reproducible chats.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Scenario files, or directories of them (their *.toml files, by name).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Also write a JUnit XML report (a suite per scenario, a case per step).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write what actually happened as a new scenario (one scenario only).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Write every scenario's transcript (JSON), to compare replays byte for byte.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,
    /// Replay against a running `thau serve` through its WebSocket (ws://HOST:PORT);
    /// $THAU_API_KEY is sent when set.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Also draw the loss and gap curves of every session into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FeedbackArgs {
    /// The rated turn: its episode id (see `thau memory list --store episodic`) or your own.
    turn: String,
    /// up or down.
    #[arg(value_parser = parse_rating)]
    rating: thau::learn::tuning::Rating,
    /// Why, in a few words (kept with the feedback episode).
    #[arg(long)]
    note: Option<String>,
}

/// `thau tool list|run`.
fn run_tool(command: ToolCommand, home: &Home, config: &ThauConfig, json: bool) -> Result<()> {
    let reg = thau::tools::ToolRegistry::builtin().map_err(ThauError::Invalid)?;
    match command {
        ToolCommand::List => {
            let all: Vec<_> = reg.manifests().cloned().collect();
            if json {
                print_json(&all);
            } else {
                for m in all {
                    println!("{} (run by {}): {}", m.name, m.actor, m.description);
                }
            }
            Ok(())
        }
        ToolCommand::Run { name, arguments } => {
            let arguments: serde_json::Value = serde_json::from_str(&arguments)
                .map_err(|e| ThauError::Invalid(format!("the arguments are not JSON: {e}")))?;
            let call = reg
                .check(thau::tools::RawCall { name, arguments })
                .map_err(|e| ThauError::Invalid(e.to_string()))?;
            // Only generate_image exists; a new tool adds its arm here and in the ToolRouter.
            let specs = thau::runtime::agent_specs(home, config)?;
            let params = specs
                .get(&thau::runtime::agents::ActorKind::ImageTool)
                .map(|s| thau::actors::image_tool::ImageToolParams::from_spec(&s.params))
                .transpose()
                .map_err(|e| ThauError::Invalid(format!("agents/image_tool.toml [params]: {e}")))?
                .unwrap_or_default();
            let req = thau::tools::image::ImageRequest::from_arguments(&call.arguments)
                .map_err(|e| ThauError::Invalid(e.to_string()))?;
            let p = req
                .resolve(&params.defaults())
                .map_err(|e| ThauError::Invalid(e.to_string()))?;
            let mut backend = params.backend().map_err(ThauError::Invalid)?;
            let g = thau::tools::image::generate_and_save(backend.as_mut(), &p, &home.images())
                .map_err(|e| ThauError::Actor {
                    actor: "image_tool".into(),
                    message: e.to_string(),
                })?;
            if json {
                print_json(&g);
            } else {
                println!(
                    "{} ({}×{}, backend {}{}, {:.2} s)",
                    g.path.display(),
                    g.width,
                    g.height,
                    g.backend,
                    if g.fallback {
                        ": the offline fallback, no image model"
                    } else {
                        ""
                    },
                    g.seconds
                );
            }
            Ok(())
        }
    }
}

/// One line for a tuning change.
fn print_change(c: &thau::learn::tuning::Change) {
    println!(
        "#{} {} {} {} → {} ({:?}): {}",
        c.id,
        c.at.format("%Y-%m-%d %H:%M:%S"),
        c.knob.name(),
        c.from,
        c.to,
        c.cause,
        c.reason
    );
}

fn parse_rating(s: &str) -> std::result::Result<thau::learn::tuning::Rating, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
enum ToolCommand {
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
enum TuneCommand {
    /// Undo a change: its knob goes back to the value before it (the undo is logged too).
    Revert {
        /// The change's id, from `thau tune`.
        id: u64,
    },
}

#[derive(Args, Debug)]
struct LearnArgs {
    /// Stop after this many minutes (default: when every item has been asked).
    #[arg(long)]
    minutes: Option<f64>,
    /// Stop after this many questions.
    #[arg(long)]
    questions: Option<usize>,
    /// The knowledge to learn from: qa.jsonl, .md and .txt files.
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    corpus: PathBuf,
    /// Seed for question order and a fresh model's initialisation (default: the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// A teacher LLM that proposes new items: ollama:MODEL@URL or openai:MODEL@URL (key
    /// from $THAU_TEACHER_API_KEY or $OPENAI_API_KEY).
    #[arg(long, value_name = "SPEC", value_parser = parse_teacher)]
    teacher: Option<thau::learn::teacher::TeacherSpec>,
    /// Start a new session even if an interrupted one (killed, crashed) could be resumed;
    /// by default it is resumed.
    #[arg(long)]
    new_session: bool,
}

fn parse_teacher(s: &str) -> std::result::Result<thau::learn::teacher::TeacherSpec, String> {
    s.parse()
}

/// Which memory store a command concerns (all of them when omitted).
#[derive(Args, Debug, Clone)]
struct StoreArg {
    /// short (conversation windows), episodic (SQLite) or long (vectors).
    #[arg(long, value_enum)]
    store: Option<thau::memory::StoreKind>,
}

#[derive(Subcommand, Debug)]
enum MemoryCommand {
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
    /// Read a JSONL export back (every line is checked before anything is written).
    Import {
        /// The file to read (`-` for standard input).
        input: PathBuf,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand, Debug)]
enum ExportCommand {
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

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GgufType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_k")]
    Q4K,
}

#[derive(Args, Debug)]
struct GrowArgs {
    /// The age to grow to (1, 3, 6, 12 or 15).
    #[arg(long)]
    to: u32,
    /// Where new layers go.
    #[arg(long, value_enum, default_value_t = PlacementArg::Interleave)]
    placement: PlacementArg,
}

/// `--placement` values (the model module does not depend on clap).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PlacementArg {
    /// Spread new layers evenly between the old ones.
    Interleave,
    /// Put new layers on top.
    End,
    /// Copy existing layers into the new ones (not exact; for comparison).
    Stack,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// The shape and parameter count of every age.
    Ages,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// A corpus: a .txt/.md/.jsonl file or a directory of them.
    #[arg(long, value_name = "PATH", default_value = "data/corpus")]
    data: PathBuf,
    /// Age to train (default: model.age from the configuration).
    #[arg(long)]
    age: Option<u32>,
    /// Optimizer steps to run.
    #[arg(long, conflicts_with = "minutes")]
    steps: Option<u64>,
    /// Minutes to train (the schedule is sized to fit).
    #[arg(long)]
    minutes: Option<f64>,
    /// Seed for initialisation and data order (default: seed from the configuration).
    #[arg(long)]
    seed: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// Start a new model even if the age has a checkpoint.
    #[arg(long)]
    fresh: bool,
    /// Train on a dataset (a name in data/datasets/, e.g. `tool_calling`, or a .json path)
    /// mixed with replay of `--data`.
    #[arg(long, value_name = "NAME|PATH")]
    dataset: Option<String>,
    /// With --dataset: the share of each epoch drawn from `--data` (replay).
    #[arg(long, default_value_t = 0.5)]
    replay: f64,
    /// With --dataset: how many times the dataset appears in each epoch.
    #[arg(long, default_value_t = 4)]
    dataset_repeat: usize,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The corpus whose held-out split is scored.
    #[arg(long, value_name = "PATH", default_value = "data/corpus")]
    data: PathBuf,
    /// A checkpoint directory (default: the newest).
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Most held-out batches to score.
    #[arg(long, default_value_t = 64)]
    max_batches: usize,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// The prompt. Answered as a user message unless --raw.
    prompt: String,
    /// Continue the prompt as plain text instead of answering it as a chat turn.
    #[arg(long)]
    raw: bool,
    #[arg(long)]
    max_tokens: Option<usize>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repetition_penalty: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Chat with a `llama`-architecture GGUF file instead of the newest checkpoint
    /// (THAU's export, or e.g. TinyLlama with its tokenizer.json beside it).
    #[arg(long, value_name = "FILE.gguf")]
    gguf: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    what: BenchKind,
    /// serve: concurrent sessions of each round.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    sessions: Vec<usize>,
    /// load: WebSocket sessions held open at once.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// load: how long the sessions chat.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// load: tokens of each answer.
    #[arg(long, default_value_t = 16)]
    turn_tokens: usize,
    /// Timed training steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Decoded tokens.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_reference: bool,
    /// decode: also time llama.cpp on the same model exported as f32 GGUF
    /// (needs llama-cpp-python; see bench/llamacpp_compare.py).
    #[arg(long)]
    llamacpp: bool,
    /// grow: steps at age 0 before growing, and at age 1 after.
    #[arg(long, default_value_t = 60)]
    steps_before: u64,
    #[arg(long, default_value_t = 60)]
    steps_after: u64,
    /// grow: steps of the age-1 model trained from scratch.
    #[arg(long, default_value_t = 120)]
    scratch_steps: u64,
    /// grow: held-out evaluation every this many steps.
    #[arg(long, default_value_t = 10)]
    eval_every: u64,
    /// grow: also run the (non-exact) stacking operator.
    #[arg(long)]
    stack: bool,
    /// memory: points loaded into the embedded vector store.
    #[arg(long, default_value_t = 100_000)]
    points: usize,
    /// memory: values per vector.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// memory: timed searches (top 10).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// memory: how the vectors are drawn.
    #[arg(long, value_enum, default_value_t = thau::memory::bench::VectorData::Texts)]
    data: thau::memory::bench::VectorData,
    /// memory (--data texts): corpus whose sentences make the texts.
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    corpus: PathBuf,
    /// embed: folder searched for qa.jsonl files (the labelled retrieval set).
    #[arg(long, value_name = "DIR", default_value = "data/corpus")]
    qa: PathBuf,
    /// embed: also score this sentence-transformer directory (BERT family).
    #[arg(long, value_name = "DIR")]
    bert: Option<PathBuf>,
    /// learn, serve, load: seed of initialisation and data order, in place of the
    /// configuration's `seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// learn: training steps per arm.
    #[arg(long, default_value_t = 300)]
    learn_steps: u64,
    /// learn: held-out evaluation every this many steps.
    #[arg(long, default_value_t = 25)]
    learn_eval_every: u64,
    /// learn: share of each gap-steered batch drawn uniformly (the Learner's replay).
    #[arg(long, default_value_t = 0.25)]
    learn_replay: f64,
    /// learn: candidates scored per gap row.
    #[arg(long, default_value_t = 4)]
    learn_pool: usize,
    /// learn: how candidates are ranked: mean NLL per answer token, or the answer's total
    /// NLL (what is left to learn in it).
    #[arg(long, value_enum, default_value_t = thau::learn::bench::GapScore::Total)]
    learn_score: thau::learn::bench::GapScore,
    /// learn: steps an item trained as a gap rests before it may be picked again (0: no
    /// rest).
    #[arg(long, default_value_t = 100)]
    learn_cooldown: u64,
    /// learn: start both arms from a model first trained on this share of the items (0:
    /// from scratch).
    #[arg(long, default_value_t = 0.5)]
    learn_known: f64,
    /// learn: steps of that warm-up.
    #[arg(long, default_value_t = 1500)]
    learn_warm: u64,
    /// tools: the held-out prompts (image requests and ordinary ones).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "data/datasets/tool_calling_eval.json"
    )]
    tool_eval: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BenchKind {
    Train,
    Decode,
    /// Growth 0 → 1 against training age 1 from scratch: FLOPs to the same held-out loss.
    Grow,
    /// The embedded vector store: insert rate, search p50/p99, recall@10 vs brute force.
    Memory,
    /// Embedders on the labelled retrieval set (paraphrase → answer): recall@1/5, MRR.
    Embed,
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
enum ConfigCommand {
    /// Print the effective configuration (defaults < thau.toml < THAU_* < --set).
    Show,
}

fn main() -> ExitCode {
    // `thau memory list | head` must end quietly when the reader goes away, as other Unix
    // tools do, instead of panicking on a write to a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    thau::alloc::tune();
    let cli = Cli::parse();
    let home = Home::new(resolve_home(cli.global.home.as_deref()));
    let config = match ThauConfig::load(&home.root, std::env::vars(), &cli.global.set) {
        Ok(mut c) => {
            if let Some(url) = &cli.global.qdrant_url {
                c.memory.qdrant_url = url.clone();
            }
            c
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(&config);
    match run(cli, home, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let code = match e {
                ThauError::Config(_)
                | ThauError::Invalid(_)
                | ThauError::Model(thau::model::ModelError::Config(_)) => EXIT_USAGE,
                ThauError::Memory(ref m) if m.is_user_error() => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr so that `--json` output on stdout stays parseable.
fn init_logging(config: &ThauConfig) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // qdrant-edge warns on every shard open about process-wide flags that only a Qdrant
    // server initialises (its API offers no way to set them); they change nothing here.
    if !config.log.contains("qdrant_edge") {
        if let Ok(d) = "qdrant_edge=error".parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli, home: Home, config: ThauConfig) -> Result<()> {
    let json = cli.global.json;
    match cli.command {
        Command::Init => {
            let report = home.init()?;
            if json {
                print_json(&report);
            } else if report.created.is_empty() {
                println!(
                    "{} is already initialised; nothing changed",
                    home.root.display()
                );
            } else {
                println!("initialised {}", home.root.display());
                for p in &report.created {
                    println!("  created {}", p.display());
                }
            }
            Ok(())
        }
        Command::Status => with_runtime(home, config, |rt| async move {
            let report = thau::status::report(&rt).await;
            rt.shutdown().await;
            if json {
                print_json(&report);
            } else {
                print_status(&report);
            }
            Ok(())
        }),
        Command::Model {
            command: ModelCommand::Ages,
        } => {
            let rows =
                thau::commands::ages::ages(config.model.vocab_size, config.model.context_length);
            if json {
                print_json(&rows);
            } else {
                println!(
                    "vocabulary {} tokens, head_dim 64 at every age",
                    config.model.vocab_size
                );
                println!(
                    "{:>4} {:>8} {:>7} {:>6} {:>7} {:>15}",
                    "age", "d_model", "layers", "heads", "d_ff", "parameters"
                );
                for r in rows {
                    println!(
                        "{:>4} {:>8} {:>7} {:>6} {:>7} {:>15}",
                        r.age,
                        r.d_model,
                        r.n_layers,
                        r.n_heads,
                        r.d_ff,
                        group(r.params)
                    );
                }
            }
            Ok(())
        }
        Command::Train(args) => cli_train(&home, &config, args, json),
        Command::Export {
            command:
                ExportCommand::Gguf {
                    age,
                    checkpoint,
                    weight_type,
                    output,
                    verify,
                    reference,
                },
        } => {
            use thau::export::ExportType;
            use thau::model::checkpoint as ckpt;
            let dir = match (checkpoint, age) {
                (Some(d), _) => d,
                (None, Some(a)) => ckpt::latest(&home.age_checkpoint(a))?
                    .ok_or_else(|| ThauError::Invalid(format!("no checkpoint of age {a}")))?,
                (None, None) => ckpt::newest(&home.checkpoints())?.ok_or_else(|| {
                    ThauError::Invalid("no checkpoint yet: run `thau train` first".into())
                })?,
            };
            let ck = ckpt::load(&dir, &candle_core::Device::Cpu, false)?;
            let ty = match weight_type {
                GgufType::F32 => ExportType::F32,
                GgufType::F16 => ExportType::F16,
                GgufType::Q8_0 => ExportType::Q8_0,
                GgufType::Q4_0 => ExportType::Q4_0,
                GgufType::Q4K => ExportType::Q4K,
            };
            let report = thau::export::export_gguf(&ck, ty, &output)?;
            if let Some(path) = &reference {
                let r = thau::export::reference(&ck, &thau::export::VERIFY_TEXTS)?;
                let bytes =
                    serde_json::to_vec(&r).map_err(|e| ThauError::Invalid(e.to_string()))?;
                thau::fsutil::atomic_write(path, &bytes)?;
            }
            let check = if verify {
                Some(thau::export::verify(
                    &ck,
                    &output,
                    &thau::export::VERIFY_TEXTS,
                )?)
            } else {
                None
            };
            if json {
                print_json(&serde_json::json!({ "export": report, "verify": check }));
            } else {
                println!(
                    "wrote {} ({} bytes, {} tensors, {:?}) from {}",
                    report.path.display(),
                    group(report.bytes),
                    report.tensors,
                    report.weight_type,
                    dir.display()
                );
                if !report.fallbacks.is_empty() {
                    println!(
                        "{} tensors written as q4_0 (a dimension is not a multiple of 256): {}",
                        report.fallbacks.len(),
                        report.fallbacks.join(", ")
                    );
                }
                if let Some(v) = check {
                    println!(
                        "verified with quantized_llama: {} positions, greedy agreement {:.1}%, max |logit difference| {:.2e}",
                        v.positions,
                        100.0 * v.greedy_agreement,
                        v.max_abs_logit_diff
                    );
                }
            }
            Ok(())
        }
        Command::Export {
            command: ExportCommand::Modelfile { gguf, output },
        } => {
            let text = thau::export::modelfile(&gguf)?;
            match output {
                Some(p) => {
                    thau::fsutil::atomic_write(&p, text.as_bytes())?;
                    if !json {
                        println!("wrote {}", p.display());
                    }
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Memory { command } => run_memory(command, &home, &config, json),
        Command::Tool { command } => run_tool(command, &home, &config, json),
        Command::Serve(args) => cli_serve(home, config, args, json),
        Command::Chat(args) => {
            home.init()?;
            let opts = thau::commands::chat::ChatOptions {
                session: args.session,
                max_tokens: args.max_tokens,
                temperature: args.temperature,
                seed: args.seed,
            };
            with_runtime(home, config, |rt| async move {
                use std::io::IsTerminal;
                let stdin = std::io::stdin();
                let interactive = stdin.is_terminal();
                let r = thau::commands::chat::chat(
                    &rt,
                    &opts,
                    &mut stdin.lock(),
                    &mut std::io::stdout(),
                    interactive,
                )
                .await;
                rt.shutdown().await;
                let session = r?;
                if interactive {
                    eprintln!("conversation {session} ended");
                }
                Ok(())
            })
        }
        Command::Replay(args) => cli_replay(
            cli.global.home.is_some().then_some(home),
            cli.global.set,
            args,
            json,
        ),
        Command::Learn(args) => cli_learn(home, config, args, json),
        Command::Stats(args) => {
            let sessions = thau::commands::learn::sessions(&home)?;
            let plot = match &args.plot {
                Some(p) => Some(thau::commands::stats::plot_sessions(&sessions, p)?),
                None => None,
            };
            if json {
                match plot {
                    Some(plot) => {
                        print_json(&serde_json::json!({ "sessions": sessions, "plot": plot }))
                    }
                    None => print_json(&sessions),
                }
                return Ok(());
            }
            if let Some(p) = &plot {
                println!(
                    "drew {} points of {} sessions into {} ({}×{})",
                    p.points,
                    p.sessions,
                    p.path.display(),
                    p.width,
                    p.height
                );
            }
            if sessions.is_empty() {
                println!("no learning session yet (run `thau learn`)");
            }
            println!(
                "{:<22} {:>7} {:>5} {:>6} {:>6} {:>6} {:>7} {:>17}",
                "SESSION", "MINUTES", "AGE", "ASKED", "GAPS", "CLOSED", "ROUNDS", "PROBE LOSS"
            );
            for r in sessions {
                println!(
                    "{:<22} {:>7.1} {:>5} {:>6} {:>6} {:>6} {:>7} {:>8.3} → {:<6.3}",
                    r.session,
                    r.seconds / 60.0,
                    r.age,
                    r.questions_asked,
                    r.gaps.opened,
                    r.gaps.closed,
                    r.rounds,
                    r.probe_loss_before,
                    r.probe_loss_after
                );
            }
            Ok(())
        }
        Command::Feedback(args) => {
            let specs = thau::runtime::agent_specs(&home, &config)?;
            let out = thau::commands::tune::feedback(
                &home,
                &specs,
                &args.turn,
                args.rating,
                args.note.as_deref(),
            )?;
            if json {
                print_json(&out);
            } else {
                println!("recorded thumbs {:?} on {}", args.rating, args.turn);
                if let Some(c) = &out.change {
                    print_change(c);
                }
            }
            Ok(())
        }
        Command::Tune { command } => {
            let specs = thau::runtime::agent_specs(&home, &config)?;
            match command {
                Some(TuneCommand::Revert { id }) => {
                    let c = thau::commands::tune::revert(&home, &specs, id)?;
                    if json {
                        print_json(&c);
                    } else {
                        print_change(&c);
                    }
                }
                None => {
                    let t = thau::commands::tune::show(&home, &specs)?;
                    if json {
                        print_json(&serde_json::json!({
                            "values": thau::learn::tuning::Knob::ALL.iter().filter_map(|k| t.value(*k).map(|v| (k.name(), v))).collect::<std::collections::BTreeMap<_, _>>(),
                            "state": t,
                        }));
                    } else {
                        println!("{:<16} {:>12} {:>12}  BOUNDS", "KNOB", "CONFIGURED", "NOW");
                        for k in thau::learn::tuning::Knob::ALL {
                            let (Some(base), Some(now)) = (t.base.get(&k), t.value(k)) else {
                                continue;
                            };
                            let b = t.config.bounds(k);
                            let frozen = if t.frozen.contains(&k) {
                                " (frozen)"
                            } else {
                                ""
                            };
                            println!(
                                "{:<16} {:>12} {:>12}  {} .. {}{frozen}",
                                k.name(),
                                base,
                                now,
                                b.min,
                                b.max
                            );
                        }
                        if t.log.is_empty() {
                            println!("no change yet");
                        }
                        for c in &t.log {
                            print_change(c);
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Grow(args) => {
            use thau::model::growth::Placement;
            let placement = match args.placement {
                PlacementArg::Interleave => Placement::Interleave,
                PlacementArg::End => Placement::End,
                PlacementArg::Stack => Placement::Stack,
            };
            let r = thau::commands::grow::grow(&home, args.to, placement)?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "grew age {} ({} parameters) to age {} ({} parameters), new layers {:?}",
                    r.from_age,
                    group(r.params_before),
                    r.to_age,
                    group(r.params_after),
                    r.placement
                );
                match r.max_logit_diff {
                    Some(d) => {
                        println!("same function: max |logit difference| on a fixed batch {d:.2e}")
                    }
                    None => println!("(too large to check the logits here)"),
                }
                println!(
                    "checkpoint {}
continue with: thau train --age {}",
                    r.checkpoint.display(),
                    r.to_age
                );
            }
            Ok(())
        }
        Command::Eval(args) => {
            let s = thau::commands::train::eval(
                &home,
                &args.data,
                args.checkpoint.as_deref(),
                args.max_batches,
            )?;
            if json {
                print_json(&s);
            } else {
                println!("checkpoint {} (age {})", s.checkpoint.display(), s.age);
                println!(
                    "held-out loss {:.4}  perplexity {:.2}  over {} tokens  (unigram baseline {:.4})",
                    s.report.loss, s.report.perplexity, s.report.tokens, s.report.unigram_loss
                );
            }
            Ok(())
        }
        Command::Generate(args) => cli_generate(home, config, args, json),
        Command::Bench(args) => {
            let mut config = config;
            if let Some(seed) = args.seed {
                config.seed = seed;
            }
            let root = thau::bench::repo_root();
            let r = match args.what {
                BenchKind::Train => {
                    thau::bench::train_bench(&root, args.steps, !args.no_reference)?
                }
                BenchKind::Decode => thau::bench::decode_bench(
                    &root,
                    args.tokens,
                    !args.no_reference,
                    args.llamacpp,
                )?,
                BenchKind::Speed => {
                    let r = thau::bench::speed_bench(&root, args.steps, args.tokens)?;
                    if json {
                        print_json(&r);
                    } else {
                        print_speed_bench(&r);
                    }
                    return Ok(());
                }
                BenchKind::Memory => {
                    let dir = tempfile_dir(&home)?;
                    let r = thau::memory::bench::vector_bench(
                        dir.path(),
                        args.points,
                        args.dim,
                        args.queries,
                        args.data,
                        &args.corpus,
                        &mut |line| eprintln!("{line}"),
                    )?;
                    if json {
                        print_json(&r);
                    } else {
                        print_memory_bench(&r);
                    }
                    return Ok(());
                }
                BenchKind::Tools => {
                    let dir =
                        thau::model::checkpoint::newest(&home.checkpoints())?.ok_or_else(|| {
                            ThauError::Invalid(
                                "no checkpoint yet: run `thau train --dataset tool_calling` first"
                                    .into(),
                            )
                        })?;
                    let ck = thau::model::checkpoint::load(&dir, &candle_core::Device::Cpu, false)?;
                    let set = thau::tools::dataset::ToolEvalSet::load(&args.tool_eval)?;
                    let reg = thau::tools::ToolRegistry::builtin().map_err(ThauError::Invalid)?;
                    let model = thau::model::transformer::from_tensors(
                        ck.weights.clone(),
                        &ck.config,
                        &candle_core::Device::Cpu,
                    )?;
                    let r =
                        thau::tools::dataset::eval_tool_calls(&model, &ck.tokenizer, &reg, &set)?;
                    if json {
                        print_json(&serde_json::json!({ "checkpoint": dir, "report": r }));
                    } else {
                        for s in &r.samples {
                            println!(
                                "{:<13} {:<45} {}",
                                s.verdict,
                                s.prompt,
                                s.output.replace('\n', " ")
                            );
                        }
                        println!("checkpoint {}", dir.display());
                        println!(
                            "image requests with a schema-valid call: {}/{} = {:.0}% (goal ≥ 90%: {})",
                            r.valid_calls, r.image_requests, 100.0 * r.call_rate,
                            if r.call_rate >= 0.9 { "met" } else { "MISSED" }
                        );
                        println!(
                            "  of which about what was asked (a content word in common): {}/{}",
                            r.faithful_calls, r.valid_calls
                        );
                        println!(
                            "ordinary prompts that got a call: {}/{} = {:.0}% (goal ≤ 5%: {})",
                            r.wrong_calls,
                            r.ordinary,
                            100.0 * r.false_call_rate,
                            if r.false_call_rate <= 0.05 {
                                "met"
                            } else {
                                "MISSED"
                            }
                        );
                    }
                    return Ok(());
                }
                BenchKind::Learn => {
                    let plan = thau::learn::bench::LearnBenchPlan {
                        steps: args.learn_steps,
                        eval_every: args.learn_eval_every,
                        replay_ratio: args.learn_replay.clamp(0.0, 1.0),
                        pool_factor: args.learn_pool.max(1),
                        score: args.learn_score,
                        cooldown: args.learn_cooldown,
                        known_share: args.learn_known.clamp(0.0, 1.0),
                        warm_steps: args.learn_warm,
                        seed: config.seed,
                        ..Default::default()
                    };
                    let r = thau::learn::bench::learn_bench(&args.corpus, &plan, &mut |l| {
                        eprintln!("{l}")
                    })?;
                    if json {
                        print_json(&r);
                    } else {
                        println!(
                            "{} items, model {} parameters, {} steps × {} rows per arm, held-out paraphrase loss:",
                            r.items, group(r.params), r.plan.steps, r.plan.batch_size
                        );
                        if let Some(w) = r.warm_loss {
                            println!(
                                "both arms start from a model trained {} steps on {} of the {} items (held-out loss {w:.4})",
                                r.plan.warm_steps, r.known_items, r.items
                            );
                        }
                        println!("{:>6} {:>10} {:>12}", "STEP", "UNIFORM", "GAP-STEERED");
                        for ((s, u), (_, g)) in r.uniform.curve.iter().zip(&r.gap_steered.curve) {
                            println!("{s:>6} {u:>10.4} {g:>12.4}");
                        }
                        match (r.steps_to_uniform_final, r.step_ratio) {
                            (Some(s), Some(ratio)) => println!(
                                "gap-steered reached uniform's final loss {:.4} at step {s}: {ratio:.2}× the steps (goal ≤ {}: {})",
                                r.uniform.final_loss(),
                                r.goal_step_ratio,
                                if ratio <= r.goal_step_ratio { "met" } else { "MISSED" }
                            ),
                            _ => println!(
                                "gap-steered did not reach uniform's final loss {:.4} (goal ≤ {}×: MISSED)",
                                r.uniform.final_loss(),
                                r.goal_step_ratio
                            ),
                        }
                        println!(
                            "wall time: uniform {:.1} s, gap-steered {:.1} s ({:.2}×, scoring the candidates)",
                            r.uniform.seconds, r.gap_steered.seconds, r.time_ratio
                        );
                    }
                    return Ok(());
                }
                BenchKind::Serve => return bench_serve(home, config, &args, json),
                BenchKind::Load => return bench_load(home, config, &args, json),
                BenchKind::Embed => {
                    use thau::memory::embed::{BertEmbedder, Embedder, HashEmbedder, ThauEmbedder};
                    let set = thau::memory::bench::RetrievalSet::from_qa_dir(&args.qa)?;
                    let mut embedders: Vec<Box<dyn Embedder>> =
                        vec![Box::new(HashEmbedder::default())];
                    match ThauEmbedder::from_checkpoints(&home.checkpoints()) {
                        Ok(e) => embedders.push(Box::new(e)),
                        Err(e) => eprintln!("thau embedder skipped: {e}"),
                    }
                    if let Some(dir) = &args.bert {
                        embedders.push(Box::new(BertEmbedder::load(dir)?));
                    }
                    let scores = embedders
                        .iter()
                        .map(|e| thau::memory::bench::embed_bench(&set, e.as_ref()))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    if json {
                        print_json(&scores);
                    } else {
                        println!(
                            "{} documents, {} paraphrase queries from {}",
                            set.documents.len(),
                            set.cases.len(),
                            args.qa.display()
                        );
                        println!(
                            "{:<40} {:>5} {:>9} {:>9} {:>6} {:>10}",
                            "EMBEDDER", "DIM", "RECALL@1", "RECALL@5", "MRR", "MS/TEXT"
                        );
                        for s in scores {
                            println!(
                                "{:<40} {:>5} {:>9.3} {:>9.3} {:>6.3} {:>10.3}",
                                clip(&s.embedder, 40),
                                s.dim,
                                s.recall_at_1,
                                s.recall_at_5,
                                s.mrr,
                                s.embed_ms_per_text
                            );
                        }
                    }
                    return Ok(());
                }
                BenchKind::Grow => {
                    let plan = thau::bench::GrowPlan {
                        steps_before: args.steps_before,
                        steps_after: args.steps_after,
                        scratch_steps: args.scratch_steps,
                        eval_every: args.eval_every.max(1),
                        stack: args.stack,
                    };
                    let r = thau::bench::grow_bench(&root, &plan, &mut |line| eprintln!("{line}"))?;
                    if json {
                        print_json(&r);
                    } else {
                        print_grow_bench(&r);
                    }
                    return Ok(());
                }
            };
            if json {
                print_json(&r);
            } else {
                print_bench(&r);
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            if json {
                print_json(&config);
            } else {
                print!("{}", config.to_toml());
            }
            Ok(())
        }
    }
}

/// Runs `f` inside an actix system with the runtime started.
fn with_runtime<F, Fut, T>(home: Home, config: ThauConfig, f: F) -> Result<T>
where
    F: FnOnce(Runtime) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let system = actix::System::new();
    let result = system.block_on(async move {
        let rt = Runtime::start(home, config)?;
        f(rt).await
    });
    actix::System::current().stop();
    result
}

/// `thau replay`: checks every file first (a malformed one stops the run), then replays
/// them one after another on one actix system.
fn cli_replay(
    home: Option<Home>,
    overrides: Vec<Override>,
    a: ReplayArgs,
    json: bool,
) -> Result<()> {
    use thau::replay::{collect, load_all, replay, report, ReplayOptions};
    let files = collect(&a.paths)?;
    let scenarios = load_all(&files).map_err(|errors| {
        ThauError::Invalid(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    if a.record.is_some() && scenarios.len() != 1 {
        return Err(ThauError::Invalid(
            "--record writes one scenario: give one file".into(),
        ));
    }
    let opts = ReplayOptions {
        home: home.map(|h| h.root),
        url: a.url,
        api_key: std::env::var("THAU_API_KEY").ok().filter(|k| !k.is_empty()),
        env: std::env::vars().collect(),
        overrides,
    };
    let cache = tempfile::tempdir().map_err(|e| ThauError::io(std::env::temp_dir(), e))?;
    let system = actix::System::new();
    let outcomes = system.block_on(async {
        let mut outcomes = Vec::new();
        for sc in &scenarios {
            if !json {
                eprintln!("replaying {} ({})", sc.name, sc.file.display());
            }
            outcomes.push(replay(sc, &opts, Some(cache.path())).await);
        }
        outcomes
    });
    if let Some(f) = &a.junit {
        let xml = report::junit(&outcomes).map_err(ThauError::Invalid)?;
        thau::fsutil::atomic_write(f, xml.as_bytes())?;
    }
    if let Some(f) = &a.transcript {
        let all: serde_json::Map<String, serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    serde_json::Value::from(o.transcript.clone()),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&all).unwrap_or_default() + "\n";
        thau::fsutil::atomic_write(f, text.as_bytes())?;
    }
    if let (Some(f), Some(sc), Some(o)) = (&a.record, scenarios.first(), outcomes.first()) {
        let text = report::record(sc, o).map_err(ThauError::Invalid)?;
        thau::fsutil::atomic_write(f, text.as_bytes())?;
    }
    if json {
        print_json(&outcomes);
    } else {
        print!("{}", report::table(&outcomes));
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if failed > 0 {
        return Err(ThauError::Failed(format!(
            "{failed} of {} scenarios failed",
            outcomes.len()
        )));
    }
    Ok(())
}

/// Runs `client` on a blocking thread against a server on a free local port, over the
/// data directory's newest model (else an untrained age-0 one), admitting
/// `max_sessions` sessions with no turn rate limit (the benchmarks measure the server,
/// not its admission limits). Returns what the client measured and which model it was.
fn with_bench_server<T: Send + 'static>(
    home: Home,
    mut config: ThauConfig,
    corpus: &std::path::Path,
    max_sessions: usize,
    client: impl FnOnce(
            std::net::SocketAddr,
            &dyn Fn() -> Option<thau::model::decode::batch::EngineStats>,
        ) -> Result<T>
        + Send
        + 'static,
) -> Result<(T, &'static str)> {
    use thau::server::{bench, serve, AppState, ServeOptions};
    let tmp = tempfile::tempdir().map_err(|e| ThauError::io(std::env::temp_dir(), e))?;
    let (home, model) = if thau::model::checkpoint::newest(&home.checkpoints())?.is_some() {
        (home, "the data directory's newest checkpoint")
    } else {
        let fresh = Home::new(tmp.path().join("home"));
        eprintln!("no model in the data directory: an untrained age-0 model it is");
        let vocab = config.model.vocab_size;
        bench::fresh_model(
            &fresh,
            corpus,
            0,
            vocab,
            config.model.context_length,
            config.seed,
        )?;
        (fresh, "an untrained age-0 model")
    };
    config.server.max_sessions = max_sessions;
    config.server.turns_per_minute = 0;
    with_runtime(home, config, |rt| async move {
        let rt = std::sync::Arc::new(rt);
        let state = AppState::new(rt.clone(), None);
        let opts = ServeOptions {
            addr: "127.0.0.1:0"
                .parse()
                .map_err(|e| ThauError::Invalid(format!("{e}")))?,
            api_key: None,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let server = tokio::spawn(async move {
            serve(
                state,
                &opts,
                move |addr| {
                    let _ = addr_tx.send(addr);
                },
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await
        });
        let rt2 = rt.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let addr = addr_rx
                .recv()
                .map_err(|_| ThauError::Invalid("the server did not start".into()))?;
            client(addr, &|| rt2.decode_stats())
        })
        .await
        .map_err(|e| ThauError::Invalid(format!("bench: {e}")))?;
        let _ = stop_tx.send(());
        let _ = server.await;
        if let Ok(rt) = std::sync::Arc::try_unwrap(rt) {
            rt.shutdown().await;
        }
        Ok((measured?, model))
    })
}

/// `thau bench serve`: a server on a free local port, then rounds of concurrent chats.
fn bench_serve(home: Home, config: ThauConfig, a: &BenchArgs, json: bool) -> Result<()> {
    use thau::server::bench;
    if a.sessions.is_empty() || a.sessions.contains(&0) {
        return Err(ThauError::Invalid(
            "--sessions takes counts above 0, e.g. 1,8,32".into(),
        ));
    }
    let (sessions, tokens) = (a.sessions.clone(), a.tokens);
    let most = sessions.iter().max().copied().unwrap_or(1) + 1;
    let (rounds, model) = with_bench_server(home, config, &a.corpus, most, move |addr, stats| {
        bench::run_rounds(addr, &sessions, tokens, "Tell me about the red fox", stats)
    })?;
    if json {
        print_json(&serde_json::json!({ "model": model, "rounds": rounds }));
    } else {
        println!("serve bench on {model}: {tokens} tokens per chat, greedy");
        println!("sessions  tokens  seconds  aggregate tok/s  ratio  per-session tok/s  TTFT p50 ms  p99 ms  batch  steps s  prompt tok");
        for r in &rounds {
            println!(
                "{:>8}  {:>6}  {:>7.2}  {:>15.1}  {:>5.2}  {:>17.1}  {:>11.0}  {:>6.0}  {:>5.1}  {:>7.2}  {:>10.0}",
                r.sessions,
                r.tokens,
                r.seconds,
                r.aggregate_tokens_per_s,
                r.ratio_to_first,
                r.per_session_tokens_per_s,
                r.ttft_p50_ms,
                r.ttft_p99_ms,
                r.mean_batch,
                r.step_seconds,
                r.mean_prompt_tokens
            );
        }
    }
    Ok(())
}

/// `thau bench load`: `--clients` sessions chatting for `--seconds` against a local
/// server. Exits 1 (after printing the figures) if any session saw an error.
fn bench_load(home: Home, config: ThauConfig, a: &BenchArgs, json: bool) -> Result<()> {
    use thau::server::bench;
    if a.clients == 0 || a.turn_tokens == 0 || !a.seconds.is_finite() || a.seconds <= 0.0 {
        return Err(ThauError::Invalid(
            "--clients, --turn-tokens and --seconds must be above 0".into(),
        ));
    }
    let (clients, tokens) = (a.clients, a.turn_tokens);
    let duration = std::time::Duration::from_secs_f64(a.seconds);
    let (r, model) = with_bench_server(home, config, &a.corpus, clients, move |addr, _| {
        bench::run_load(addr, clients, duration, tokens)
    })?;
    if json {
        print_json(&serde_json::json!({ "model": model, "load": r }));
    } else {
        println!(
            "load bench on {model}: {} WebSocket sessions for {:.0} s, {tokens} tokens per answer",
            r.sessions, a.seconds
        );
        println!(
            "sessions held {}/{} · errors {} · {} turns ({:.1}/s) · turn latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            r.held,
            r.sessions,
            r.errors,
            r.turns,
            r.turns_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms
        );
        for e in &r.error_samples {
            println!("error: {e}");
        }
    }
    if r.errors > 0 {
        return Err(ThauError::Failed(format!(
            "{} sessions saw errors",
            r.errors
        )));
    }
    Ok(())
}

/// `thau serve`: starts the runtime and the HTTP API; Ctrl-C (or SIGTERM) stops accepting,
/// lets requests in flight finish, then shuts the actors down (flushing their stores).
fn cli_serve(home: Home, config: ThauConfig, a: ServeArgs, json: bool) -> Result<()> {
    use thau::server::{serve, AppState, ServeOptions};
    home.init()?;
    let opts = ServeOptions {
        addr: a.addr,
        api_key: std::env::var("THAU_API_KEY").ok().filter(|k| !k.is_empty()),
    };
    with_runtime(home, config, |rt| async move {
        let rt = std::sync::Arc::new(rt);
        let state = AppState::new(rt.clone(), opts.api_key.clone());
        let keyed = opts.api_key.is_some();
        serve(
            state,
            &opts,
            |addr| {
                if json {
                    print_json(&serde_json::json!({ "listening": format!("http://{addr}") }));
                } else {
                    println!(
                        "THAU serving on http://{addr} (API key {}); Ctrl-C stops",
                        if keyed {
                            "required on POST routes"
                        } else {
                            "not set"
                        }
                    );
                }
            },
            Runtime::wait_for_signal(),
        )
        .await?;
        match std::sync::Arc::try_unwrap(rt) {
            Ok(rt) => {
                for e in rt.shutdown().await {
                    eprintln!("shutdown: {e}");
                }
            }
            Err(_) => {
                eprintln!("shutdown: requests still hold the runtime; actors stop with the process")
            }
        }
        Ok(())
    })
}

/// `thau learn`: starts the runtime, runs a session with a live progress line, prints the
/// summary. Ctrl-C stops asking, lets the Learner finish its round and save.
fn cli_learn(home: Home, config: ThauConfig, a: LearnArgs, json: bool) -> Result<()> {
    use thau::commands::learn::{learn, LearnRequest};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    home.init()?;
    let req = LearnRequest {
        minutes: a.minutes,
        questions: a.questions,
        corpus: a.corpus,
        seed: a.seed.unwrap_or(config.seed),
        teacher: a.teacher,
        resume: !a.new_session,
    };
    let bar = indicatif::ProgressBar::hidden();
    if !json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_message("opening the model (a fresh data directory trains a tokenizer first)");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    with_runtime(home, config, |rt| async move {
        let result = learn(&rt, &req, &stop, &mut |p| {
            bar.set_message(format!(
                "asked {} · gaps open {} closed {} · rounds {} · step {} · loss {} · {} tok/s · age {}{}",
                p.asked,
                p.gaps_open,
                p.gaps_closed,
                p.rounds,
                p.step,
                p.loss.map_or("-".into(), |l| format!("{l:.3}")),
                p.tokens_per_s.map_or("-".into(), |t| format!("{t:.0}")),
                p.age,
                p.idle.as_ref().map_or(String::new(), |i| format!(" · {i}"))
            ) + &if p.teacher_accepted + p.teacher_rejected as usize > 0 {
                format!(" · teacher {} kept, {} rejected", p.teacher_accepted, p.teacher_rejected)
            } else {
                String::new()
            });
        })
        .await;
        bar.finish_and_clear();
        rt.shutdown().await;
        let r = result?;
        if json {
            print_json(&r);
        } else {
            println!(
                "session {} ({:.1} min, stopped by {}){}",
                r.session,
                r.seconds / 60.0,
                r.stopped_by,
                if r.fresh_model {
                    ", started from a fresh model"
                } else {
                    ""
                }
            );
            println!(
                "asked {} questions; {} gaps opened, {} closed, {} still open",
                r.questions_asked, r.gaps.opened, r.gaps.closed, r.gaps.open
            );
            println!(
                "trained {} rounds, step {} → {}, age {} ({} parameters)",
                r.rounds,
                r.step_before,
                r.step_after,
                r.age,
                group(r.params)
            );
            println!(
                "probe loss on {} held-out paraphrases: {:.4} → {:.4} ({:+.1}%)",
                r.probe_items,
                r.probe_loss_before,
                r.probe_loss_after,
                100.0 * (r.probe_loss_after - r.probe_loss_before) / r.probe_loss_before
            );
            if r.teacher_accepted > 0 || !r.teacher_rejected.is_empty() {
                let why: Vec<String> = r
                    .teacher_rejected
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                println!(
                    "teacher: {} items kept; rejected: {}",
                    r.teacher_accepted,
                    if why.is_empty() {
                        "none".into()
                    } else {
                        why.join(", ")
                    }
                );
            }
            if let Some(c) = &r.checkpoint {
                println!("checkpoint {}", c.display());
            }
        }
        Ok(())
    })
}

/// `thau train`: runs the trainer with a progress bar; Ctrl-C stops after the current step
/// and saves a checkpoint.
fn cli_train(home: &Home, config: &ThauConfig, a: TrainArgs, json: bool) -> Result<()> {
    use thau::commands::train::{train, Budget, Progress, TrainRequest};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C while saving is ignored: the checkpoint must finish.
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    home.init()?;
    let req = TrainRequest {
        data: a.data,
        age: a.age.unwrap_or(config.model.age),
        budget: match (a.steps, a.minutes) {
            (Some(s), _) => Some(Budget::Steps(s)),
            (None, Some(m)) => Some(Budget::Minutes(m)),
            _ => None,
        },
        options: thau::model::train::TrainOptions {
            batch_size: a.batch,
            seq_len: a.seq_len,
            accum: a.accum,
            lr: a.lr,
            warmup: a.warmup,
            seed: a.seed.unwrap_or(config.seed),
            // A dataset's conversations are answered alone: train them alone too.
            chats_apart: a.dataset.is_some(),
            ..Default::default()
        },
        vocab_size: config.model.vocab_size,
        fresh: a.fresh,
        dataset: a
            .dataset
            .as_deref()
            .map(|d| thau::commands::train::DatasetMix {
                path: thau::tools::dataset::resolve_dataset(d),
                replay_ratio: a.replay,
                repeat: a.dataset_repeat,
            }),
    };
    let bar = indicatif::ProgressBar::hidden();
    if !json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    let mut on = |p: Progress| match p {
        Progress::Started {
            total_steps,
            budget,
            params,
            resumed,
        } => {
            let (len, template) = match budget {
                Some(Budget::Minutes(m)) => (
                    (m * 60.0) as u64,
                    "{bar:30} {elapsed_precise}/{duration_precise} {msg}",
                ),
                _ => (total_steps, "{bar:30} step {pos}/{len} ETA {eta} {msg}"),
            };
            bar.set_length(len);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.println(format!(
                "{} model, {params} parameters",
                if resumed { "resumed" } else { "new" }
            ));
        }
        Progress::Step(r, elapsed) => {
            match req.budget {
                Some(Budget::Minutes(_)) => bar.set_position(elapsed as u64),
                _ => bar.inc(1),
            }
            bar.set_message(format!(
                "loss {:.3} lr {:.1e} {:.0} tok/s",
                r.loss,
                r.lr,
                r.tokens as f64 / r.seconds
            ));
        }
        Progress::Eval(c) => bar.println(format!(
            "step {:>6}  {:>6.0}s  held-out loss {}{}",
            c.step,
            c.seconds,
            c.heldout_loss.map_or("n/a".into(), |l| format!("{l:.4}")),
            c.train_loss
                .map_or(String::new(), |l| format!("  train loss {l:.4}"))
        )),
    };
    let report = train(home, &req, &stop, &mut on)?;
    bar.finish_and_clear();
    if json {
        print_json(&report);
    } else {
        let loss = |c: Option<&thau::commands::train::CurvePoint>| {
            c.and_then(|c| c.heldout_loss)
                .map_or("n/a".to_string(), |l| format!("{l:.4}"))
        };
        println!(
            "{} steps, {} tokens in {:.0}s ({:.0} tokens/s); held-out loss {} -> {} (unigram baseline {}){}",
            report.steps,
            report.tokens,
            report.seconds,
            report.tokens_per_s,
            loss(report.curve.first()),
            loss(report.curve.last()),
            report.unigram_loss.map_or("n/a".to_string(), |l| format!("{l:.4}")),
            if report.interrupted { " — interrupted" } else { "" }
        );
        println!("checkpoint {}", report.checkpoint.display());
    }
    Ok(())
}

/// `thau generate`: asks the Inference actor, printing text as it streams in.
fn cli_generate(home: Home, mut config: ThauConfig, a: GenerateArgs, json: bool) -> Result<()> {
    use thau::actors::inference::{Generate, Prompt};
    use thau::model::tokenizer::{Message, Role};
    if let Some(g) = &a.gguf {
        config.model.gguf = g.display().to_string();
    }
    with_runtime(home, config, move |rt| async move {
        let inference = rt.addrs.inference.clone().ok_or_else(|| {
            ThauError::Invalid("the inference actor is disabled in agents/".into())
        })?;
        let mut params = thau::model::generate::SamplingParams::default();
        if let Some(v) = a.max_tokens {
            params.max_new_tokens = v;
        }
        if let Some(v) = a.temperature {
            params.temperature = v;
        }
        if let Some(v) = a.top_k {
            params.top_k = v;
        }
        if let Some(v) = a.top_p {
            params.top_p = v;
        }
        if let Some(v) = a.repetition_penalty {
            params.repetition_penalty = v;
        }
        if let Some(v) = a.seed {
            params.seed = v;
        }
        let prompt = if a.raw {
            Prompt::Text(a.prompt)
        } else {
            Prompt::Chat(vec![Message::new(Role::User, a.prompt)])
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let printer = tokio::spawn(async move {
            use std::io::Write;
            while let Some(piece) = rx.recv().await {
                if !json {
                    print!("{piece}");
                    let _ = std::io::stdout().flush();
                }
            }
        });
        let reply = inference
            .send(Generate {
                prompt,
                params: Some(params),
                stream: Some(tx),
            })
            .await
            .map_err(|e| ThauError::Actor {
                actor: "inference".into(),
                message: e.to_string(),
            })?;
        let _ = printer.await;
        let result = reply.map_err(|e| ThauError::Actor {
            actor: "inference".into(),
            message: e.to_string(),
        });
        rt.shutdown().await;
        let g = result?;
        if json {
            print_json(&g);
        } else {
            println!();
        }
        Ok(())
    })
}

fn print_bench(r: &thau::bench::BenchReport) {
    println!(
        "thau {} (age {}, {} parameters, {} threads): {:.1} tokens/s",
        r.bench, r.config.age, r.config.params, r.config.threads, r.tokens_per_s
    );
    if let Some([f, b, o]) = r.split_s {
        println!("  per step: forward {f:.3}s  backward {b:.3}s  optimizer {o:.3}s");
    }
    match (r.reference_tokens_per_s, r.ratio) {
        (Some(t), Some(x)) => {
            println!("{}: {:.1} tokens/s", r.reference, t);
            if let Some([f, b, o]) = r.reference_split_s {
                println!("  per step: forward {f:.3}s  backward {b:.3}s  optimizer {o:.3}s");
            }
            println!("ratio thau / reference: {x:.2}x");
        }
        _ => println!("reference {}", r.reference),
    }
    if let Some(l) = &r.llamacpp {
        match (l.tokens_per_s, l.ratio) {
            (Some(t), Some(x)) => println!(
                "{} on the same model (f32 GGUF): {t:.1} tokens/s; ratio thau / llama.cpp: {x:.2}x",
                l.note
            ),
            _ => println!("llama.cpp {}", l.note),
        }
    }
}

fn print_speed_bench(r: &thau::bench::SpeedReport) {
    println!("cpu: {}", r.train.config.cpu);
    print_bench(&r.train);
    print_bench(&r.decode);
    let verdict = |x: Option<f64>| match x {
        Some(x) if x >= r.goal_ratio => format!("{x:.2}× (goal ≥ {:.1}: met)", r.goal_ratio),
        Some(x) => format!("{x:.2}× (goal ≥ {:.1}: MISSED)", r.goal_ratio),
        None => "not measured".into(),
    };
    println!("training, thau / pytorch: {}", verdict(r.train.ratio));
    println!(
        "batch-1 decode, thau / llama.cpp: {}",
        verdict(r.decode.llamacpp.as_ref().and_then(|l| l.ratio))
    );
}

fn print_grow_bench(r: &thau::bench::GrowBenchReport) {
    println!(
        "age 0 ({} parameters) for {} steps, grown to age 1 ({} parameters) for {} more, vs age 1 from scratch for {} steps",
        group(r.params_age0), r.steps_before, group(r.params_age1), r.steps_after, r.scratch_steps
    );
    println!(
        "target: the scratch run's final held-out loss {:.4}",
        r.target_loss
    );
    for p in &r.paths {
        match (p.flops_to_target, p.ratio) {
            (Some(f), Some(x)) => println!(
                "  {:<8} reaches it at {:.3e} FLOPs: {:.2}x the scratch FLOPs",
                p.name, f, x
            ),
            _ => println!(
                "  {:<8} does not reach it within its budget (best {:.4})",
                p.name, p.best_loss
            ),
        }
    }
}

/// 20452224 → "20,452,224".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `thau memory ...`: the work is in `thau::commands::memory`; this prints it.
fn run_memory(command: MemoryCommand, home: &Home, config: &ThauConfig, json: bool) -> Result<()> {
    use thau::commands::memory as mem;
    let mut stores = mem::Stores::new(home, config);
    match command {
        MemoryCommand::Stats(s) => {
            let st = mem::stats(&mut stores, s.store)?;
            if json {
                print_json(&st);
                return Ok(());
            }
            if let Some(sh) = &st.short {
                println!(
                    "short     {} conversations, {} turns, {} tokens (budget {} per window, {})",
                    sh.conversations, sh.turns, sh.tokens, sh.budget_tokens, sh.counted_by
                );
            }
            if let Some(e) = &st.episodic {
                let kinds: Vec<String> =
                    e.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                println!(
                    "episodic  {} episodes in {} sessions, {} KiB, schema v{} ({})",
                    e.episodes,
                    e.sessions,
                    e.bytes / 1024,
                    e.schema_version,
                    e.path.display()
                );
                if !kinds.is_empty() {
                    println!("          {}", kinds.join(", "));
                }
            }
            if let Some(l) = &st.long {
                println!(
                    "long      {} points of {} values, {} indexed; {} at {}; embedder {}",
                    l.points,
                    l.vector_size,
                    l.indexed.map_or("n/a".to_string(), |n| n.to_string()),
                    l.backend,
                    l.location,
                    st.embedder.as_deref().unwrap_or("?")
                );
            }
        }
        MemoryCommand::List {
            store,
            limit,
            offset,
            session,
            kind,
        } => {
            let items = mem::list(
                &mut stores,
                store.store,
                &mem::ListArgs {
                    limit,
                    offset,
                    session,
                    kind,
                },
            )?;
            if json {
                print_json(&items);
                return Ok(());
            }
            println!(
                "{:<8} {:<36} {:<28} {:<5} {:<19} TEXT",
                "STORE", "ID", "SOURCE", "IMP", "AT"
            );
            for i in items {
                println!(
                    "{:<8} {:<36} {:<28} {:<5} {:<19} {}",
                    i.store.name(),
                    clip(&i.id, 36),
                    clip(&i.source, 28),
                    i.importance.map_or("-".into(), |x| format!("{x:.2}")),
                    i.at.format("%Y-%m-%d %H:%M:%S"),
                    clip(&i.text, 60)
                );
            }
        }
        MemoryCommand::Search {
            query,
            store,
            limit,
            source,
            min_importance,
        } => {
            let filter = thau::memory::vector::PayloadFilter {
                source,
                min_importance,
            };
            let hits = mem::search(&mut stores, store.store, &query, limit, &filter)?;
            if json {
                print_json(&hits);
                return Ok(());
            }
            println!(
                "{:<6} {:<8} {:<36} {:<28} TEXT",
                "SCORE", "STORE", "ID", "SOURCE"
            );
            for h in hits {
                println!(
                    "{:<6.3} {:<8} {:<36} {:<28} {}",
                    h.score,
                    h.store.name(),
                    clip(&h.id, 36),
                    clip(&h.source, 28),
                    clip(&h.text, 60)
                );
            }
        }
        MemoryCommand::Show { id, store } => {
            let shown = mem::show(&mut stores, store.store, &id)?;
            // Both forms are JSON: an entry's full content is structured.
            if json {
                print_json(&shown);
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            }
        }
        MemoryCommand::Forget { id, store } => {
            let f = mem::forget(&mut stores, store.store, &id)?;
            if json {
                print_json(&f);
            } else {
                println!(
                    "forgot {} ({} store, {} entries)",
                    f.id,
                    f.store.name(),
                    f.removed
                );
            }
        }
        MemoryCommand::Export { store, output } => {
            let counts = match &output {
                Some(path) => mem::export_file(&mut stores, store.store, path)?,
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = std::io::BufWriter::new(stdout.lock());
                    let c = mem::export_to(&mut stores, store.store, &mut lock)?;
                    std::io::Write::flush(&mut lock).map_err(|e| ThauError::io("<stdout>", e))?;
                    c
                }
            };
            // With output on stdout, the summary goes to stderr so the JSONL stays clean.
            let summary = format!(
                "exported {} short-term turns, {} episodes, {} long-term points",
                counts.short, counts.episodic, counts.long
            );
            if output.is_none() {
                eprintln!("{summary}");
            } else if json {
                print_json(&counts);
            } else {
                println!("{summary}");
            }
        }
        MemoryCommand::Import { input, store } => {
            let counts = if input.as_os_str() == "-" {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                mem::import_from(&mut stores, store.store, &mut lock)?
            } else {
                let f = std::fs::File::open(&input).map_err(|e| ThauError::io(&input, e))?;
                mem::import_from(&mut stores, store.store, &mut std::io::BufReader::new(f))?
            };
            if json {
                print_json(&counts);
            } else {
                println!(
                    "imported {} short-term turns, {} episodes, {} long-term points",
                    counts.short, counts.episodic, counts.long
                );
            }
        }
    }
    Ok(())
}

/// A scratch directory under `<home>/runs` (removed when dropped).
fn tempfile_dir(home: &Home) -> Result<tempfile::TempDir> {
    let runs = home.runs();
    std::fs::create_dir_all(&runs).map_err(|e| ThauError::io(&runs, e))?;
    tempfile::Builder::new()
        .prefix("bench-memory-")
        .tempdir_in(&runs)
        .map_err(|e| ThauError::io(&runs, e))
}

fn print_memory_bench(r: &thau::memory::bench::VectorBenchReport) {
    println!(
        "embedded vector store (qdrant-edge): {} points × {} ({:?}), {} queries, top 10",
        r.points, r.dim, r.data, r.queries
    );
    println!(
        "insert        {:>10.0} points/s (batches of 1000, each flushed)",
        r.insert_points_per_s
    );
    println!(
        "index build   {:>10.2} s ({} points indexed)",
        r.index_build_s,
        r.indexed_points.map_or("?".into(), |n| n.to_string())
    );
    println!(
        "search        p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms (HNSW, ef {})",
        r.search_p50_ms, r.search_p99_ms, r.search_mean_ms, r.hnsw_ef
    );
    println!(
        "exact search  p50 {:.3} ms (brute force in the store)",
        r.exact_p50_ms
    );
    println!(
        "recall@10     {:.4} against exact brute force",
        r.recall_at_10
    );
    println!(
        "goals         p99 < {} ms: {} ({:.2}× the limit); recall@10 ≥ {}: {}",
        r.goal_p99_ms,
        if r.search_p99_ms < r.goal_p99_ms {
            "met"
        } else {
            "MISSED"
        },
        r.search_p99_ms / r.goal_p99_ms,
        r.goal_recall_at_10,
        if r.recall_at_10 >= r.goal_recall_at_10 {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// The first `n` characters of `s` on one line, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

fn print_status(r: &thau::status::StatusReport) {
    println!(
        "home: {}{}",
        r.home,
        if r.initialised {
            ""
        } else {
            " (not initialised: run `thau init`)"
        }
    );
    println!(
        "\n{:<18} {:<8} {:>8} {:>8}  note",
        "actor", "state", "restarts", "handled"
    );
    for a in &r.actors {
        let state = match (a.enabled, a.running) {
            (false, _) => "disabled",
            (true, true) => "running",
            (true, false) => "down",
        };
        println!(
            "{:<18} {:<8} {:>8} {:>8}  {}",
            a.name, state, a.restarts, a.handled, a.note
        );
    }
    let m = &r.model;
    println!(
        "\nmodel: age {}, {}, checkpoint {}",
        m.age,
        m.params
            .map_or("no parameters yet".to_string(), |p| format!(
                "{p} parameters"
            )),
        m.checkpoint.as_deref().unwrap_or("none")
    );
    let s = &r.stores;
    println!(
        "stores: {} checkpoint ages, {} images, {} saved actor states",
        s.checkpoints, s.images, s.actor_states
    );
}
