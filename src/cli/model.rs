//! The model commands: `thau init`, `model ages`, `train`, `eval`, `generate`, `grow` and
//! `export`. Each returns its report; `thau train` draws a progress bar on standard error
//! while it runs, and `thau generate` streams the answer to standard output as it is
//! decoded (without `--json`).

use std::path::PathBuf;

use serde::Serialize;
use thau::actors::reply;
use thau::commands::with_runtime;
use thau::config::ThauConfig;
use thau::home::Home;
use thau::{Result, ThauError};

use super::args::{
    EvalAnswersArgs, EvalArgs, EvalCommand, ExportCommand, GenerateArgs, GgufType, GrowArgs,
    ImportCommand, TrainArgs,
};
use super::report::Report;

/// `thau init`: creates the data directory (idempotent).
pub fn init(home: &Home) -> Result<thau::home::InitReport> {
    home.init()
}

/// What `thau model ages` shows: every age's shape, for the configured vocabulary.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Ages {
    #[serde(skip)]
    pub vocab_size: usize,
    pub rows: Vec<thau::commands::ages::AgeRow>,
}

/// `thau model ages`.
pub fn ages(config: &ThauConfig) -> Ages {
    Ages {
        vocab_size: config.model.vocab_size,
        rows: thau::commands::ages::ages(config.model.vocab_size, config.model.context_length),
    }
}

/// `thau train`: runs the trainer with a progress bar; Ctrl-C stops after the current step
/// and saves a checkpoint.
pub fn train(
    home: &Home,
    config: &ThauConfig,
    a: TrainArgs,
    json: bool,
) -> Result<thau::commands::train::TrainReport> {
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
        copy_head: config.model.copy_head,
        device: thau::model::device(&config.device)?,
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
    Ok(report)
}

/// `thau eval`: held-out loss of the newest (or the given) checkpoint; `thau eval
/// answers`: answer accuracy.
pub fn eval(home: Home, config: ThauConfig, a: EvalArgs) -> Result<Box<dyn Report>> {
    match a.command {
        Some(EvalCommand::Answers(a)) => Ok(Box::new(eval_answers(home, config, a)?)),
        None => Ok(Box::new(thau::commands::train::eval(
            &home,
            &a.data,
            a.checkpoint.as_deref(),
            a.max_batches,
            &thau::model::device(&config.device)?,
        )?)),
    }
}

/// `thau eval answers`: the QA file asked locally (a runtime in this process) or of the
/// server at `--url`, scored.
fn eval_answers(
    home: Home,
    config: ThauConfig,
    a: EvalAnswersArgs,
) -> Result<thau::eval::answers::AnswersReport> {
    use thau::eval::answers::{collect_local, collect_remote, score, EvalOptions};
    let text = std::fs::read_to_string(&a.qa).map_err(|e| ThauError::io(&a.qa, e))?;
    let mut items = thau::eval::score::parse_qa(&text)
        .map_err(|e| ThauError::Invalid(format!("{}: {e}", a.qa.display())))?;
    if let Some(n) = a.limit {
        items.truncate(n.max(1));
    }
    let opts = EvalOptions {
        closed_book_only: a.closed_book,
        max_tokens: a.max_tokens.clamp(1, 512),
    };
    let started = std::time::Instant::now();
    let (collected, target) = match &a.url {
        Some(url) => (collect_remote(url, &items, &opts)?, url.clone()),
        None => {
            home.init()?;
            let items2 = items.clone();
            let c = with_runtime(home, config, move |rt| async move {
                let c = collect_local(&rt, &items2, &opts).await;
                rt.shutdown().await;
                c
            })?;
            (c, "local".to_string())
        }
    };
    Ok(score(
        a.qa,
        &items,
        collected,
        started.elapsed().as_secs_f64(),
        target,
    ))
}

/// What `thau generate` produced: the generation and the memories its prompt held.
#[derive(Debug, Serialize)]
pub struct Generated {
    #[serde(flatten)]
    pub generation: thau::model::generate::Generation,
    pub memories: Vec<thau::memory::recall::RecallHit>,
}

/// `thau generate`: asks the Inference actor, printing text as it streams in (without
/// `--json`); the report is the whole generation. A chat prompt (not `--raw`) holds the
/// memories recalled for it unless `--no-memory`.
pub fn generate(
    home: Home,
    mut config: ThauConfig,
    a: GenerateArgs,
    json: bool,
) -> Result<Generated> {
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
        let mut memories = Vec::new();
        let prompt = if a.raw {
            Prompt::Text(a.prompt)
        } else {
            let user = vec![Message::new(Role::User, a.prompt.clone())];
            if !a.no_memory && rt.config.memory.recall {
                let answer = Some(params.max_new_tokens);
                memories = thau::chat::recall_for_prompt(&rt, &inference, &a.prompt, &user, answer)
                    .await?;
            }
            Prompt::Chat(thau::chat::with_memories(user, &memories))
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
        let answer = inference
            .send(Generate {
                prompt,
                params: Some(params),
                stream: Some(tx),
                tools: None,
            })
            .await;
        let _ = printer.await;
        rt.shutdown().await;
        Ok(Generated {
            generation: reply("inference", answer)?,
            memories,
        })
    })
}

/// `thau grow`: grows the newest model to `--to`, exactly.
pub fn grow(
    home: &Home,
    config: &ThauConfig,
    a: &GrowArgs,
) -> Result<thau::commands::grow::GrowReport> {
    let dev = thau::model::device(&config.device)?;
    Ok(thau::commands::grow::grow(
        home,
        a.to,
        a.placement.into(),
        &dev,
    )?)
}

/// What `thau export gguf` wrote, from which checkpoint, and the check of it
/// (`--verify`).
#[derive(Debug, Serialize)]
pub struct Exported {
    pub export: thau::export::ExportReport,
    pub verify: Option<thau::export::VerifyReport>,
    /// The exported checkpoint directory.
    #[serde(skip)]
    pub from: PathBuf,
}

/// `thau export gguf`: the chosen checkpoint as a GGUF file, with the reference logits
/// (`--reference`) and the check through candle's `quantized_llama` (`--verify`).
pub fn export_gguf(
    home: &Home,
    age: Option<u32>,
    checkpoint: Option<PathBuf>,
    weight_type: GgufType,
    output: &std::path::Path,
    verify: bool,
    reference: Option<&std::path::Path>,
) -> Result<Exported> {
    let dir = thau::export::checkpoint_to_export(home, checkpoint, age)?;
    let ck = thau::model::checkpoint::load(&dir, &candle_core::Device::Cpu, false)?;
    let export = thau::export::export_gguf(&ck, weight_type.into(), output)?;
    if let Some(path) = reference {
        let r = thau::export::reference(&ck, &thau::export::VERIFY_TEXTS)?;
        let bytes = serde_json::to_vec(&r).map_err(|e| ThauError::Runtime(e.to_string()))?;
        thau::fsutil::atomic_write(path, &bytes)?;
    }
    let verify = if verify {
        Some(thau::export::verify(
            &ck,
            output,
            &thau::export::VERIFY_TEXTS,
        )?)
    } else {
        None
    };
    Ok(Exported {
        export,
        verify,
        from: dir,
    })
}

/// An Ollama Modelfile, and where it was written (standard output when `None`).
#[derive(Debug, Serialize)]
pub struct Modelfile {
    pub text: String,
    pub written: Option<PathBuf>,
}

/// `thau export modelfile`: the Modelfile that runs `gguf`, written to `output` (else
/// printed).
pub fn modelfile(gguf: &str, output: Option<PathBuf>) -> Result<Modelfile> {
    let text = thau::export::modelfile(gguf)?;
    if let Some(p) = &output {
        thau::fsutil::atomic_write(p, text.as_bytes())?;
    }
    Ok(Modelfile {
        text,
        written: output,
    })
}

/// `thau export gguf|modelfile`.
pub fn export(home: &Home, command: ExportCommand) -> Result<Box<dyn Report>> {
    Ok(match command {
        ExportCommand::Gguf {
            age,
            checkpoint,
            weight_type,
            output,
            verify,
            reference,
        } => Box::new(export_gguf(
            home,
            age,
            checkpoint,
            weight_type,
            &output,
            verify,
            reference.as_deref(),
        )?),
        ExportCommand::Hf {
            age,
            checkpoint,
            output,
            reference,
        } => Box::new(export_hf(
            home,
            age,
            checkpoint,
            &output,
            reference.as_deref(),
        )?),
        ExportCommand::Modelfile { gguf, output } => Box::new(modelfile(&gguf, output)?),
    })
}

/// `thau export hf`: the checkpoint as a Hugging Face directory, and with `reference`
/// the native model's logits to compare `transformers` against.
pub fn export_hf(
    home: &Home,
    age: Option<u32>,
    checkpoint: Option<PathBuf>,
    output: &std::path::Path,
    reference: Option<&std::path::Path>,
) -> Result<thau::hf::HfExportReport> {
    let dir = thau::export::checkpoint_to_export(home, checkpoint, age)?;
    let ck = thau::model::checkpoint::load(&dir, &candle_core::Device::Cpu, false)?;
    let report = thau::hf::export_hf(&ck, output)?;
    if let Some(path) = reference {
        let r = thau::export::reference(&ck, &thau::export::VERIFY_TEXTS)?;
        let bytes = serde_json::to_vec(&r).map_err(|e| ThauError::Runtime(e.to_string()))?;
        thau::fsutil::atomic_write(path, &bytes)?;
    }
    Ok(report)
}

/// `thau import hf DIR`.
pub fn import(home: &Home, command: ImportCommand) -> Result<thau::hf::HfImportReport> {
    home.init()?;
    match command {
        ImportCommand::Hf { dir } => Ok(thau::hf::import_hf(&dir, home)?),
    }
}
