//! ShortTermMemory: keeps one window of recent turns per conversation
//! ([`ShortTermStore`]) and files the turns that overflow a window as episodes.
//!
//! Receives [`AddTurn`], [`GetWindow`], [`SearchShort`], [`CloseConversation`],
//! [`ListWindows`], [`ForgetWindow`] and the common messages; sends [`Remember`] to EpisodicMemory for every evicted turn. Runs on its
//! own async arbiter under a `Supervisor`.

use std::path::Path;

use actix::prelude::*;
use serde::Serialize;

use crate::actors::episodic_memory::Remember;
use crate::actors::{guarded, memory_reply, ActorBase, ActorError, ThauActor};
use crate::memory::recall::RecallHit;
use crate::memory::short_term::{
    ConversationTurn, ShortTermStore, TokenCounter, Window, WindowInfo, WordCounter,
};
use crate::memory::{Episode, EpisodeKind};
use crate::model::tokenizer::{Role, ThauTokenizer};
use crate::runtime::agents::AgentSpec;

/// Append a turn to a conversation's window.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<TurnAdded, ActorError>")]
pub struct AddTurn {
    pub conversation: String,
    pub role: Role,
    pub text: String,
}

/// What [`AddTurn`] did.
#[derive(Debug, Clone, Serialize)]
pub struct TurnAdded {
    pub window_tokens: usize,
    pub window_turns: usize,
    /// Turns moved out of the window into episodic memory.
    pub evicted: usize,
    /// Turns that left the window but could not be filed (EpisodicMemory disabled): the
    /// caller now holds the only copy.
    pub unfiled: Vec<ConversationTurn>,
}

/// The current window of a conversation (empty if unknown).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Window, ActorError>")]
pub struct GetWindow(pub String);

/// Turns sharing words with a query.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<RecallHit>, ActorError>")]
pub struct SearchShort {
    pub query: String,
    pub limit: usize,
}

/// Close a conversation: its turns are filed as episodes and the window dropped; answers
/// how many were filed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct CloseConversation(pub String);

/// Every conversation's window: its size and last turn.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Vec<WindowInfo>, ActorError>")]
pub struct ListWindows;

/// Drop a conversation's window without filing its turns; answers how many were dropped.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct ForgetWindow(pub String);

/// The ShortTermMemory actor's state.
pub struct ShortTermMemory {
    base: ActorBase,
    store: Result<ShortTermStore, String>,
    /// Where evicted turns go (EpisodicMemory); `None` when that actor is disabled.
    episodic: Option<Recipient<Remember>>,
}

/// The model's tokenizer if one has been trained, else a word count.
pub fn token_counter(checkpoints: &Path) -> Box<dyn TokenCounter> {
    let tok = crate::model::checkpoint::newest(checkpoints)
        .ok()
        .flatten()
        .and_then(|dir| ThauTokenizer::load(&dir.join(crate::model::checkpoint::TOKENIZER)).ok());
    match tok {
        Some(t) => Box::new(t),
        None => Box::new(WordCounter),
    }
}

impl ShortTermMemory {
    pub fn new(
        base: ActorBase,
        _spec: &AgentSpec,
        memory_dir: &Path,
        checkpoints: &Path,
        budget: usize,
        episodic: Option<Recipient<Remember>>,
    ) -> Self {
        let store = ShortTermStore::open(
            &memory_dir.join(crate::memory::SHORT_TERM_FILE),
            budget,
            token_counter(checkpoints),
        )
        .map_err(|e| e.to_string());
        ShortTermMemory {
            base,
            store,
            episodic,
        }
    }

    fn store(&mut self) -> Result<&mut ShortTermStore, ActorError> {
        self.store
            .as_mut()
            .map_err(|e| ActorError::Unavailable(format!("short-term store: {e}")))
    }

    /// Files turns as `chat_turn` episodes; returns how many were filed and, without an
    /// EpisodicMemory to take them, the turns themselves (so they reach the caller).
    fn file(&self, turns: Vec<ConversationTurn>) -> (usize, Vec<ConversationTurn>) {
        let Some(target) = self.episodic.as_ref() else {
            if !turns.is_empty() {
                tracing::warn!(
                    turns = turns.len(),
                    "EpisodicMemory disabled: evicted turns returned to the caller"
                );
            }
            return (0, turns);
        };
        let n = turns.len();
        if n == 0 {
            return (0, turns);
        }
        let episodes = turns
            .into_iter()
            .map(|t| {
                let mut e = Episode::new(
                    &t.conversation,
                    self.base.name,
                    EpisodeKind::ChatTurn,
                    t.text,
                )
                .with_metadata(serde_json::json!({ "role": t.role, "tokens": t.tokens }));
                e.created_at = t.at;
                e
            })
            .collect();
        // do_send queues even when the mailbox is at capacity: evicted turns must not drop.
        target.do_send(Remember(episodes));
        (n, Vec::new())
    }
}

impl ThauActor for ShortTermMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.store {
            Ok(s) => {
                let w = s.windows();
                format!(
                    "{} conversations, {} turns; budget {} tokens by {}",
                    w.len(),
                    w.iter().map(|w| w.turns).sum::<usize>(),
                    s.budget(),
                    s.counter().describe()
                )
            }
            Err(e) => format!("unavailable: {e}"),
        }
    }
}

crate::supervised_actor!(ShortTermMemory);

impl Handler<AddTurn> for ShortTermMemory {
    type Result = Result<TurnAdded, ActorError>;
    fn handle(&mut self, m: AddTurn, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "AddTurn", |me| {
            let store = me.store()?;
            let evicted = store
                .push(&m.conversation, m.role, &m.text)
                .map_err(memory_reply)?;
            let (window_tokens, window_turns) = store
                .window(&m.conversation)
                .map_or((0, 0), |w| (w.tokens, w.turns.len()));
            let (evicted, unfiled) = me.file(evicted);
            Ok(TurnAdded {
                window_tokens,
                window_turns,
                evicted,
                unfiled,
            })
        })
    }
}

impl Handler<GetWindow> for ShortTermMemory {
    type Result = Result<Window, ActorError>;
    fn handle(&mut self, m: GetWindow, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "GetWindow", |me| {
            Ok(me.store()?.window(&m.0).cloned().unwrap_or_default())
        })
    }
}

impl Handler<SearchShort> for ShortTermMemory {
    type Result = Result<Vec<RecallHit>, ActorError>;
    fn handle(&mut self, m: SearchShort, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "SearchShort", |me| {
            Ok(me
                .store()?
                .search(&m.query, m.limit)
                .map_err(memory_reply)?
                .into_iter()
                .map(|(t, s)| RecallHit::from_turn(t, s))
                .collect())
        })
    }
}

impl Handler<CloseConversation> for ShortTermMemory {
    type Result = Result<usize, ActorError>;
    fn handle(&mut self, m: CloseConversation, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "CloseConversation", |me| {
            if me.episodic.is_none() {
                return Err(ActorError::Unavailable(
                    "EpisodicMemory is disabled: closing the conversation would lose its turns"
                        .into(),
                ));
            }
            let turns = me.store()?.forget(&m.0).map_err(memory_reply)?;
            Ok(me.file(turns).0)
        })
    }
}

impl Handler<ListWindows> for ShortTermMemory {
    type Result = Result<Vec<WindowInfo>, ActorError>;
    fn handle(&mut self, _: ListWindows, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ListWindows", |me| Ok(me.store()?.windows()))
    }
}

impl Handler<ForgetWindow> for ShortTermMemory {
    type Result = Result<usize, ActorError>;
    fn handle(&mut self, m: ForgetWindow, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ForgetWindow", |me| {
            let store = me.store()?;
            if store.window(&m.0).is_none() {
                return Err(ActorError::NotFound(format!("no conversation `{}`", m.0)));
            }
            let turns = store.forget(&m.0).map_err(memory_reply)?;
            Ok(turns.len())
        })
    }
}
