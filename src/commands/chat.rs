//! `thau chat`: an interactive terminal chat on the local actors. [`chat`] reads lines,
//! streams each answer's text as it is decoded (tool calls are shown as calls, never as
//! markup), and answers slash commands ([`SlashCommand`]): `/memory [QUERY]`, `/tools`,
//! `/feedback up|down [NOTE]`, `/save [FILE]`, `/history`, `/help`, `/quit`. The
//! conversation's history is its short-term window: every prompt holds the turns so far.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::Serialize;

use crate::actors::short_term_memory::GetWindow;
use crate::actors::tuner::Feedback;
use crate::actors::{reply, AskError};
use crate::chat::{chat_turn, ChatError, ChatRequest};
use crate::error::{Result, ThauError};
use crate::learn::tuning::Rating;
use crate::runtime::Runtime;

/// Hits shown by `/memory QUERY`.
const MEMORY_HITS: usize = 5;
/// Characters of a hit shown by `/memory`.
const HIT_PREVIEW_CHARS: usize = 100;

/// Settings of a chat.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// The conversation's name (a new one when `None`).
    pub session: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub seed: Option<u64>,
    /// Recall memories into prompts (default: the `[memory] recall` setting).
    pub memory: Option<bool>,
}

/// The memories an answer's prompt held, as `source (score)` items.
pub fn sources_line(memories: &[crate::memory::recall::RecallHit]) -> String {
    memories
        .iter()
        .map(|m| format!("{} ({:.2})", m.source, m.score))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A line that starts with `/`.
#[derive(Debug, Clone, PartialEq)]
pub enum SlashCommand {
    Memory(Option<String>),
    Tools,
    Feedback { up: bool, note: Option<String> },
    Save(Option<PathBuf>),
    History,
    Help,
    Quit,
}

/// The slash commands, for `/help`.
pub const HELP: &str = "/memory [QUERY]  the window's size, or what THAU recalls of QUERY
/tools           the tools THAU may call
/feedback up|down [NOTE]  rate the last answer
/save [FILE]     write the conversation as JSON (default: chat-<session>.json)
/history         the conversation so far
/quit            leave (Ctrl-D too)";

impl SlashCommand {
    /// Parses a `/...` line; the error says what was wrong.
    pub fn parse(line: &str) -> std::result::Result<SlashCommand, String> {
        let line = line.trim();
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let arg = (!rest.is_empty()).then(|| rest.to_string());
        Ok(match cmd {
            "/memory" => SlashCommand::Memory(arg),
            "/tools" => SlashCommand::Tools,
            "/feedback" => {
                let (rating, note) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let up = match rating {
                    "up" | "+" | "👍" => true,
                    "down" | "-" | "👎" => false,
                    _ => return Err("usage: /feedback up|down [NOTE]".into()),
                };
                let note = note.trim();
                SlashCommand::Feedback {
                    up,
                    note: (!note.is_empty()).then(|| note.to_string()),
                }
            }
            "/save" => SlashCommand::Save(arg.map(PathBuf::from)),
            "/history" => SlashCommand::History,
            "/help" | "/?" => SlashCommand::Help,
            "/quit" | "/exit" | "/q" => SlashCommand::Quit,
            other => return Err(format!("unknown command {other} (try /help)")),
        })
    }
}

/// One exchange, for `/save`.
#[derive(Debug, Clone, Serialize)]
struct Exchange {
    user: String,
    reply: String,
    tool_calls: Vec<crate::tools::ToolCall>,
    images: Vec<String>,
}

/// What `/save` writes.
#[derive(Debug, Clone, Serialize)]
struct SavedChat<'a> {
    session: &'a str,
    saved_at: chrono::DateTime<chrono::Utc>,
    exchanges: &'a [Exchange],
}

/// Runs the chat until `/quit` or the end of `input`; answers the conversation's id.
pub async fn chat(
    rt: &Runtime,
    opts: &ChatOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    interactive: bool,
) -> Result<String> {
    let session = opts
        .session
        .clone()
        .unwrap_or_else(|| format!("chat-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let io = |e: std::io::Error| ThauError::Runtime(format!("terminal: {e}"));
    writeln!(
        out,
        "THAU chat, conversation {session} (/help for commands, /quit to leave)"
    )
    .map_err(io)?;
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut turns = 0u64;
    loop {
        if interactive {
            write!(out, "> ").map_err(io)?;
            out.flush().map_err(io)?;
        }
        let mut line = String::new();
        if input.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') {
            let cmd = match SlashCommand::parse(line) {
                Ok(c) => c,
                Err(e) => {
                    writeln!(out, "{e}").map_err(io)?;
                    continue;
                }
            };
            if cmd == SlashCommand::Quit {
                break;
            }
            let said = slash(rt, &session, cmd, &exchanges, turns).await;
            writeln!(out, "{}", said.unwrap_or_else(|e| format!("error: {e}"))).map_err(io)?;
            continue;
        }
        let req = ChatRequest {
            session: Some(session.clone()),
            message: line.to_string(),
            max_tokens: opts.max_tokens,
            temperature: opts.temperature,
            seed: opts.seed.map(|s| s.wrapping_add(turns)),
            memory: opts.memory,
            token: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut parser = crate::tools::ToolCallParser::default();
        let mut shown = String::new();
        let printer = async {
            while let Some(piece) = rx.recv().await {
                let delta = parser.visible(&piece);
                shown.push_str(&delta);
                // A closed terminal ends the chat at the next read; decoding goes on.
                let _ = write!(out, "{delta}");
                let _ = out.flush();
            }
        };
        let (reply, ()) = tokio::join!(chat_turn(rt, req, true, Some(tx)), printer);
        match reply {
            Ok(r) => {
                if shown.trim().is_empty() && !r.reply.is_empty() {
                    write!(out, "{}", r.reply).map_err(io)?;
                }
                writeln!(out).map_err(io)?;
                for (call, result) in r.tool_calls.iter().zip(&r.tool_results) {
                    writeln!(
                        out,
                        "  [tool {} {}] {}",
                        call.name,
                        call.arguments,
                        if result.ok { "ok" } else { "failed" }
                    )
                    .map_err(io)?;
                }
                if !r.memories.is_empty() {
                    writeln!(out, "  sources: {}", sources_line(&r.memories)).map_err(io)?;
                }
                for img in &r.images {
                    // The API's URL names the file in the images directory.
                    let file = img.rsplit('/').next().unwrap_or(img);
                    writeln!(out, "  [image {}]", rt.home.images().join(file).display())
                        .map_err(io)?;
                }
                exchanges.push(Exchange {
                    user: line.to_string(),
                    reply: r.reply,
                    tool_calls: r.tool_calls,
                    images: r.images,
                });
                turns += 1;
            }
            Err(ChatError::BadRequest(m)) => writeln!(out, "\n{m}").map_err(io)?,
            Err(e) => return Err(ThauError::Runtime(e.to_string())),
        }
    }
    Ok(session)
}

/// The conversation's short-term window.
async fn window(
    rt: &Runtime,
    session: &str,
) -> std::result::Result<crate::memory::short_term::Window, String> {
    let short = rt
        .addrs
        .short_term_memory
        .clone()
        .ok_or("ShortTermMemory is not running")?;
    reply(
        "short_term_memory",
        short.send(GetWindow(session.into())).await,
    )
    .map_err(|e| e.to_string())
}

/// Runs a slash command; answers the text to show.
async fn slash(
    rt: &Runtime,
    session: &str,
    cmd: SlashCommand,
    exchanges: &[Exchange],
    turns: u64,
) -> std::result::Result<String, String> {
    let e = |e: AskError| e.to_string();
    match cmd {
        SlashCommand::Memory(None) => {
            let w = window(rt, session).await?;
            Ok(format!(
                "short-term window: {} turns, {} tokens (/memory QUERY searches every store)",
                w.turns.len(),
                w.tokens
            ))
        }
        SlashCommand::Memory(Some(q)) => {
            let hits = rt
                .recall(&q, MEMORY_HITS)
                .await
                .map_err(|e| e.to_string())?;
            if hits.is_empty() {
                return Ok(format!("nothing recalled for {q:?}"));
            }
            Ok(hits
                .iter()
                .map(|h| {
                    let text: String = h.text.chars().take(HIT_PREVIEW_CHARS).collect();
                    format!("  {:.3}  {:?}  {text}", h.score, h.store)
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        SlashCommand::Tools => {
            let reg = crate::tools::ToolRegistry::builtin()?;
            Ok(reg
                .manifests()
                .map(|m| format!("  {}: {}", m.name, m.description))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        SlashCommand::Feedback { up, note } => {
            if turns == 0 {
                return Err("nothing to rate yet".into());
            }
            let tuner = rt.addrs.tuner.clone().ok_or("the Tuner is not running")?;
            let o = reply(
                "tuner",
                tuner
                    .send(Feedback {
                        session: session.into(),
                        turn: format!("{session}#{}", turns - 1),
                        rating: if up { Rating::Up } else { Rating::Down },
                        note,
                    })
                    .await,
            )
            .map_err(e)?;
            Ok(format!(
                "thanks: {} ratings so far{}",
                o.ratings.values().sum::<u64>(),
                o.change
                    .map(|c| format!("; tuning changed {:?}", c.knob))
                    .unwrap_or_default()
            ))
        }
        SlashCommand::Save(file) => {
            let file = file.unwrap_or_else(|| PathBuf::from(format!("chat-{session}.json")));
            let saved = SavedChat {
                session,
                saved_at: chrono::Utc::now(),
                exchanges,
            };
            let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
            crate::fsutil::atomic_write(&file, &bytes).map_err(|e| e.to_string())?;
            Ok(format!(
                "saved {} exchanges to {}",
                exchanges.len(),
                file.display()
            ))
        }
        SlashCommand::History => {
            let w = window(rt, session).await?;
            if w.turns.is_empty() {
                return Ok("(nothing yet)".into());
            }
            Ok(w.turns
                .iter()
                .map(|t| format!("  {:?}: {}", t.role, t.text))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        SlashCommand::Help => Ok(HELP.to_string()),
        SlashCommand::Quit => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_commands_parse_with_clear_errors() {
        assert_eq!(
            SlashCommand::parse("/feedback down  too short "),
            Ok(SlashCommand::Feedback {
                up: false,
                note: Some("too short".into())
            })
        );
        assert_eq!(
            SlashCommand::parse("/memory"),
            Ok(SlashCommand::Memory(None))
        );
        assert_eq!(
            SlashCommand::parse("/memory la capital"),
            Ok(SlashCommand::Memory(Some("la capital".into())))
        );
        assert_eq!(
            SlashCommand::parse("/save /tmp/x.json"),
            Ok(SlashCommand::Save(Some("/tmp/x.json".into())))
        );
        assert_eq!(SlashCommand::parse("/quit"), Ok(SlashCommand::Quit));
        assert!(SlashCommand::parse("/feedback maybe")
            .unwrap_err()
            .contains("usage"));
        assert!(SlashCommand::parse("/frobnicate")
            .unwrap_err()
            .contains("unknown command /frobnicate"));
    }
}
