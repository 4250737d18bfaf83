//! The runtime event stream: [`RuntimeEvent`]s broadcast on an [`EventBus`] so that
//! observers (the websocket, the web page, tests) can watch what the actors do.

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it starts losing the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// Something that happened inside the runtime.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// An actor started (first time or after a restart).
    ActorStarted,
    /// An actor handled a message; `message` is its type name, `from` the sender if known.
    Message {
        message: String,
        from: Option<String>,
    },
    /// An actor panicked while handling `message` and is being restarted.
    ActorRestarted {
        message: String,
        panic: String,
        restarts: u64,
    },
    /// An actor saved its state during shutdown.
    ActorFlushed,
    /// A free-form report from an actor.
    Report { detail: serde_json::Value },
    /// A step of the self-learning loop.
    Learning { event: crate::learn::LearnEvent },
}

/// One event with its time and the actor it concerns.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuntimeEvent {
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A cloneable handle to the broadcast channel of runtime events.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<RuntimeEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            tx: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Publishes an event; having no subscriber is not an error.
    pub fn emit(&self, actor: &str, kind: EventKind) {
        let _ = self.tx.send(RuntimeEvent {
            at: chrono::Utc::now(),
            actor: actor.to_string(),
            kind,
        });
    }

    /// A new receiver that sees every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.tx.subscribe()
    }
}
