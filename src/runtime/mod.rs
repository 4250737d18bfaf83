//! The actor runtime: [`Runtime`] starts the actors configured in `agents/*.toml`, hands
//! out their addresses ([`Addrs`]), reports their health and shuts them down gracefully.
//!
//! Async actors each get their own arbiter under an actix `Supervisor`; CPU-heavy actors
//! (inference, learner, image tool) run on `SyncArbiter` threads. A panic inside any
//! handler is caught by [`crate::actors::guarded`]: the caller gets an error, the actor is
//! rebuilt at the same address, the restart is logged and published on the [`EventBus`].

pub mod agents;
pub mod events;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::actors::{
    episodic_memory::EpisodicMemory,
    gap_detector::GapDetector,
    image_tool::ImageTool,
    inference::Inference,
    learner::Learner,
    long_term_memory::LongTermMemory,
    questioner::Questioner,
    short_term_memory::ShortTermMemory,
    tool_router::ToolRouter,
    tuner::{LearningSignal, Tuner},
    ActorBase, ActorError, ActorStats, Flush, InjectFault, Ping, Pong,
};
use crate::config::ThauConfig;
use crate::error::{Result, ThauError};
use crate::home::Home;
use agents::{load_agents, ActorKind, AgentSpec};
use events::{EventBus, EventKind, RuntimeEvent};

/// How long a health check or a flush may take before the actor is reported unresponsive.
pub const ACTOR_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses of the running actors (`None` when disabled in `agents/`).
#[derive(Clone, Default)]
pub struct Addrs {
    pub inference: Option<Addr<Inference>>,
    pub learner: Option<Addr<Learner>>,
    pub image_tool: Option<Addr<ImageTool>>,
    pub questioner: Option<Addr<Questioner>>,
    pub gap_detector: Option<Addr<GapDetector>>,
    pub tool_router: Option<Addr<ToolRouter>>,
    pub short_term_memory: Option<Addr<ShortTermMemory>>,
    pub episodic_memory: Option<Addr<EpisodicMemory>>,
    pub long_term_memory: Option<Addr<LongTermMemory>>,
    pub tuner: Option<Addr<Tuner>>,
}

/// The type-erased handles the runtime keeps for every running actor.
struct Handle {
    stats: Arc<ActorStats>,
    ping: Recipient<Ping>,
    flush: Recipient<Flush>,
    fault: Recipient<InjectFault>,
}

/// Health of one actor, as `thau status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub name: String,
    pub enabled: bool,
    pub running: bool,
    pub restarts: u64,
    pub handled: u64,
    pub note: String,
}

/// The running actor system.
pub struct Runtime {
    pub home: Home,
    pub config: ThauConfig,
    pub events: EventBus,
    pub addrs: Addrs,
    specs: BTreeMap<ActorKind, AgentSpec>,
    handles: BTreeMap<ActorKind, Handle>,
    /// The async actors' arbiters, stopped (dropping the actors and closing their stores)
    /// by [`Runtime::shutdown`].
    arbiters: Vec<Arbiter>,
    /// What the Inference threads share (weights swapped in, the decode thread).
    inference_cell: Option<Arc<crate::actors::inference::WeightsCell>>,
}

/// Starts an async actor on its own arbiter under a supervisor.
fn start_async<A, F>(arbiters: &mut Vec<Arbiter>, make: F) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
    F: FnOnce() -> A + Send + 'static,
{
    let arbiter = Arbiter::new();
    let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| make());
    arbiters.push(arbiter);
    addr
}

fn handle_of<A>(addr: &Addr<A>, stats: Arc<ActorStats>) -> Handle
where
    A: Actor + actix::Handler<Ping> + actix::Handler<Flush> + actix::Handler<InjectFault>,
    A::Context: actix::dev::ToEnvelope<A, Ping>
        + actix::dev::ToEnvelope<A, Flush>
        + actix::dev::ToEnvelope<A, InjectFault>,
{
    Handle {
        stats,
        ping: addr.clone().recipient(),
        flush: addr.clone().recipient(),
        fault: addr.clone().recipient(),
    }
}

/// The actors' settings for a data directory: the configured agents directory, else
/// `<home>/agents`, else the built-in defaults.
pub fn agent_specs(home: &Home, config: &ThauConfig) -> Result<BTreeMap<ActorKind, AgentSpec>> {
    let dir = if !config.paths.agents_dir.is_empty() {
        Some(std::path::PathBuf::from(&config.paths.agents_dir))
    } else if home.agents().is_dir() {
        Some(home.agents())
    } else {
        None
    };
    load_agents(dir.as_deref())
}

impl Runtime {
    /// Starts every enabled actor of the agents directory (the configured one, else
    /// `<home>/agents`, else the built-in defaults). Must run inside an actix `System`.
    pub fn start(home: Home, config: ThauConfig) -> Result<Runtime> {
        let specs = agent_specs(&home, &config)?;
        // Actors' own parameters are read here so a typo fails the start, not a request.
        if let Some(spec) = specs.get(&ActorKind::Inference) {
            spec.params
                .clone()
                .try_into::<crate::model::generate::SamplingParams>()
                .map_err(|e| ThauError::Invalid(format!("agents/inference.toml [params]: {e}")))?;
        }
        if let Some(spec) = specs.get(&ActorKind::Learner) {
            crate::actors::learner::learner_params(&spec.params)
                .map_err(|e| ThauError::Invalid(format!("agents/learner.toml [params]: {e}")))?;
        }
        if let Some(spec) = specs.get(&ActorKind::Questioner) {
            spec.params
                .clone()
                .try_into::<crate::actors::questioner::QuestionerParams>()
                .map_err(|e| ThauError::Invalid(format!("agents/questioner.toml [params]: {e}")))?;
        }
        if let Some(spec) = specs.get(&ActorKind::GapDetector) {
            spec.params
                .clone()
                .try_into::<crate::learn::gaps::ThresholdConfig>()
                .map_err(|e| {
                    ThauError::Invalid(format!("agents/gap_detector.toml [params]: {e}"))
                })?;
        }
        if let Some(spec) = specs.get(&ActorKind::ImageTool) {
            crate::actors::image_tool::ImageToolParams::from_spec(&spec.params)
                .map_err(|e| ThauError::Invalid(format!("agents/image_tool.toml [params]: {e}")))?;
        }
        if let Some(spec) = specs.get(&ActorKind::ToolRouter) {
            spec.params
                .clone()
                .try_into::<crate::actors::tool_router::ToolRouterParams>()
                .map_err(|e| {
                    ThauError::Invalid(format!("agents/tool_router.toml [params]: {e}"))
                })?;
            crate::tools::ToolRegistry::builtin().map_err(ThauError::Invalid)?;
        }
        if specs.get(&ActorKind::Tuner).is_some_and(|s| s.enabled) {
            crate::actors::tuner::tuning_setup(&specs).map_err(ThauError::Invalid)?;
        }
        let events = EventBus::new();
        let mut rt = Runtime {
            home,
            config,
            events,
            addrs: Addrs::default(),
            specs,
            handles: BTreeMap::new(),
            arbiters: Vec::new(),
            inference_cell: None,
        };
        let mut arbiters = Vec::new();
        for (&kind, spec) in rt.specs.clone().iter().filter(|(_, s)| s.enabled) {
            let stats = Arc::new(ActorStats::default());
            let base = ActorBase {
                name: kind.name(),
                stats: stats.clone(),
                events: rt.events.clone(),
                state_dir: rt.home.runs().join("actors"),
                mailbox: spec.mailbox,
            };
            let spec = spec.clone();
            macro_rules! run_async {
                ($field:ident, $ty:ty) => {{
                    let addr = start_async(&mut arbiters, move || <$ty>::new(base, &spec));
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.$field = Some(addr);
                }};
            }
            let checkpoints = rt.home.checkpoints();
            let gguf = Some(&rt.config.model.gguf)
                .filter(|g| !g.is_empty())
                .map(std::path::PathBuf::from);
            match kind {
                ActorKind::Inference => {
                    // One cell for all threads, so a weight swap reaches each of them,
                    // and one decode thread batching every session's generations.
                    let cell = Arc::new(
                        crate::actors::inference::WeightsCell::with_engine()
                            .map_err(|e| ThauError::Invalid(format!("inference: {e}")))?,
                    );
                    rt.inference_cell = Some(cell.clone());
                    let addr = SyncArbiter::start(spec.threads, move || {
                        Inference::new(base.clone(), &spec, checkpoints.clone(), gguf.clone())
                            .with_weights_cell(cell.clone())
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.inference = Some(addr);
                }
                ActorKind::Learner => {
                    let links = crate::actors::learner::LearnerLinks {
                        inference: rt.addrs.inference.clone().map(|a| a.recipient()),
                        gap_detector: rt.addrs.gap_detector.clone().map(|a| a.recipient()),
                        episodic: rt.addrs.episodic_memory.clone().map(|a| a.recipient()),
                        current: Default::default(),
                    };
                    let addr = SyncArbiter::start(spec.threads, move || {
                        Learner::new(base.clone(), &spec, checkpoints.clone(), links.clone())
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.learner = Some(addr);
                }
                ActorKind::ImageTool => {
                    let images = rt.home.images();
                    let addr = SyncArbiter::start(spec.threads, move || {
                        ImageTool::new(base.clone(), &spec, &images)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.image_tool = Some(addr);
                }
                ActorKind::Questioner => {
                    let gaps = rt.addrs.gap_detector.clone().map(|a| a.recipient());
                    let episodic = rt.addrs.episodic_memory.clone().map(|a| a.recipient());
                    let addr = start_async(&mut arbiters, move || {
                        Questioner::new(base, &spec, gaps, episodic)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.questioner = Some(addr);
                }
                ActorKind::GapDetector => run_async!(gap_detector, GapDetector),
                ActorKind::Tuner => {
                    // Started last (ActorKind order): the actors it tunes already run.
                    let links = crate::actors::tuner::TunerLinks {
                        learner: rt.addrs.learner.clone().map(|a| a.recipient()),
                        inference: rt.addrs.inference.clone().map(|a| a.recipient()),
                        gap_detector: rt.addrs.gap_detector.clone().map(|a| a.recipient()),
                        episodic: rt.addrs.episodic_memory.clone().map(|a| a.recipient()),
                    };
                    let home = rt.home.root.clone();
                    let specs = rt.specs.clone();
                    let addr = start_async(&mut arbiters, move || {
                        Tuner::new(base, &home, &specs, links)
                    });
                    // The learning signals reach the Tuner from the event bus, forwarded
                    // by a task on its own arbiter (stopped with it).
                    let mut rx = rt.events.subscribe();
                    let to = addr.clone().recipient::<LearningSignal>();
                    if let Some(arbiter) = arbiters.last() {
                        arbiter.spawn(async move {
                            loop {
                                match rx.recv().await {
                                    Ok(RuntimeEvent {
                                        kind: EventKind::Learning { event },
                                        ..
                                    }) => to.do_send(LearningSignal(event)),
                                    Ok(_) => {}
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                        tracing::warn!(
                                            missed = n,
                                            "tuner fell behind the event bus"
                                        );
                                    }
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.tuner = Some(addr);
                }
                ActorKind::ToolRouter => {
                    let image = rt.addrs.image_tool.clone().map(|a| a.recipient());
                    let episodic = rt.addrs.episodic_memory.clone().map(|a| a.recipient());
                    let addr = start_async(&mut arbiters, move || {
                        ToolRouter::new(base, &spec, image, episodic)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.tool_router = Some(addr);
                }
                // Memory actors open their stores under <home>/memory. EpisodicMemory
                // starts first (ActorKind order) so ShortTermMemory can file evictions there.
                ActorKind::EpisodicMemory => {
                    let dir = rt.home.memory();
                    let addr = start_async(&mut arbiters, move || {
                        EpisodicMemory::new(base, &spec, &dir)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.episodic_memory = Some(addr);
                }
                ActorKind::ShortTermMemory => {
                    let dir = rt.home.memory();
                    let budget = rt.config.memory.short_term_tokens;
                    let episodic = rt.addrs.episodic_memory.clone().map(|a| a.recipient());
                    let addr = start_async(&mut arbiters, move || {
                        ShortTermMemory::new(base, &spec, &dir, &checkpoints, budget, episodic)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.short_term_memory = Some(addr);
                }
                ActorKind::LongTermMemory => {
                    let dir = rt.home.memory();
                    let cfg = rt.config.memory.clone();
                    let addr = start_async(&mut arbiters, move || {
                        LongTermMemory::new(base, &spec, &dir, &checkpoints, &cfg)
                    });
                    rt.handles.insert(kind, handle_of(&addr, stats));
                    rt.addrs.long_term_memory = Some(addr);
                }
            }
        }
        // The GapDetector starts before the actors it feeds; wire it now that all run.
        if let Some(g) = &rt.addrs.gap_detector {
            g.do_send(crate::actors::gap_detector::ConnectLoop {
                inference: rt.addrs.inference.clone().map(|a| a.recipient()),
                learner: rt.addrs.learner.clone().map(|a| a.recipient()),
                questioner: rt.addrs.questioner.clone().map(|a| a.recipient()),
                episodic: rt.addrs.episodic_memory.clone().map(|a| a.recipient()),
                long_term: rt.addrs.long_term_memory.clone().map(|a| a.recipient()),
            });
        }
        rt.arbiters = arbiters;
        Ok(rt)
    }

    /// Names of the running actors.
    /// The batching decode thread's counters (steps, rows, prefills), when Inference runs.
    pub fn decode_stats(&self) -> Option<crate::model::decode::batch::EngineStats> {
        self.inference_cell.as_ref()?.engine_stats()
    }

    pub fn running(&self) -> Vec<&'static str> {
        self.handles.keys().map(|k| k.name()).collect()
    }

    fn handle(&self, name: &str) -> Result<&Handle> {
        ActorKind::from_name(name)
            .and_then(|k| self.handles.get(&k))
            .ok_or_else(|| ThauError::Invalid(format!("no running actor named `{name}`")))
    }

    /// Sends [`Ping`] to one actor.
    pub async fn ping(&self, name: &str) -> Result<Pong> {
        let h = self.handle(name)?;
        let reply = tokio::time::timeout(ACTOR_REPLY_TIMEOUT, h.ping.send(Ping)).await;
        flatten(name, reply)
    }

    /// Sends [`InjectFault`] to one actor; the actor panics and is restarted.
    pub async fn inject_fault(&self, name: &str) -> Result<()> {
        let h = self.handle(name)?;
        let reply = tokio::time::timeout(ACTOR_REPLY_TIMEOUT, h.fault.send(InjectFault)).await;
        flatten(name, reply)
    }

    /// Recall from every running memory actor, merged into one ranked list
    /// ([`crate::memory::recall::merge`]). A bad query is an error; a store that is
    /// unavailable is left out (and logged) so the others still answer.
    pub async fn recall(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<crate::memory::recall::RecallHit>> {
        use crate::actors::episodic_memory::SearchEpisodes;
        use crate::actors::long_term_memory::RecallLong;
        use crate::actors::short_term_memory::SearchShort;
        use crate::memory::recall::RecallHit;
        fn take<T>(
            actor: &str,
            r: std::result::Result<std::result::Result<Vec<T>, ActorError>, MailboxError>,
        ) -> Result<Vec<T>> {
            match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(ActorError::BadRequest(m))) => Err(ThauError::Invalid(m)),
                Ok(Err(e)) => {
                    tracing::warn!(actor, error = %e, "recall: store left out");
                    Ok(Vec::new())
                }
                Err(e) => Err(ThauError::Actor {
                    actor: actor.into(),
                    message: e.to_string(),
                }),
            }
        }
        let mut lists = Vec::new();
        if let Some(a) = &self.addrs.short_term_memory {
            let r = a
                .send(SearchShort {
                    query: query.into(),
                    limit,
                })
                .await;
            lists.push(take("short_term_memory", r)?);
        }
        if let Some(a) = &self.addrs.episodic_memory {
            let r = a
                .send(SearchEpisodes {
                    query: query.into(),
                    filter: Default::default(),
                    limit,
                })
                .await;
            lists.push(
                take("episodic_memory", r)?
                    .into_iter()
                    .map(RecallHit::from_episode)
                    .collect(),
            );
        }
        if let Some(a) = &self.addrs.long_term_memory {
            let r = a
                .send(RecallLong {
                    query: query.into(),
                    limit,
                    filter: Default::default(),
                })
                .await;
            lists.push(
                take("long_term_memory", r)?
                    .into_iter()
                    .map(RecallHit::from_point)
                    .collect(),
            );
        }
        Ok(crate::memory::recall::merge(lists, limit))
    }

    /// Health of every configured actor, pinging the running ones.
    pub async fn status(&self) -> Vec<ActorStatus> {
        let mut out = Vec::new();
        for kind in ActorKind::ALL {
            let Some(spec) = self.specs.get(&kind) else {
                continue;
            };
            let mut st = ActorStatus {
                name: kind.name().into(),
                enabled: spec.enabled,
                running: false,
                restarts: 0,
                handled: 0,
                note: "disabled in agents/".into(),
            };
            if let Some(h) = self.handles.get(&kind) {
                st.restarts = h.stats.restarts.load(Ordering::Relaxed);
                match self.ping(kind.name()).await {
                    Ok(p) => {
                        st.running = true;
                        st.handled = p.handled;
                        st.note = p.note;
                    }
                    Err(e) => st.note = format!("not answering: {e}"),
                }
            }
            out.push(st);
        }
        out
    }

    /// Graceful shutdown: every actor saves its state ([`Flush`]), then the actor system
    /// stops. Errors are collected, not fatal: every actor gets its chance to flush.
    pub async fn shutdown(mut self) -> Vec<ThauError> {
        let mut errors = Vec::new();
        for (kind, h) in &self.handles {
            let reply = tokio::time::timeout(ACTOR_REPLY_TIMEOUT, h.flush.send(Flush)).await;
            if let Err(e) = flatten(kind.name(), reply) {
                tracing::warn!(actor = kind.name(), error = %e, "flush failed");
                errors.push(e);
            }
        }
        // Stop the async actors' threads and wait for them, so their stores (the vector
        // shard, the short-term file) are closed and unlocked when this returns.
        let arbiters = std::mem::take(&mut self.arbiters);
        for a in &arbiters {
            a.stop();
        }
        let joined = tokio::task::spawn_blocking(move || {
            for a in arbiters {
                let _ = a.join();
            }
        });
        if tokio::time::timeout(ACTOR_REPLY_TIMEOUT, joined)
            .await
            .is_err()
        {
            tracing::warn!("some actor threads did not stop in time");
        }
        tracing::info!("runtime stopped");
        errors
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub async fn wait_for_signal() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Turns a timed-out / undelivered / failed actor reply into one error naming the actor.
fn flatten<T>(
    name: &str,
    reply: std::result::Result<
        std::result::Result<std::result::Result<T, ActorError>, MailboxError>,
        tokio::time::error::Elapsed,
    >,
) -> Result<T> {
    let actor = name.to_string();
    match reply {
        Err(_) => Err(ThauError::Actor {
            actor,
            message: format!("no reply within {ACTOR_REPLY_TIMEOUT:?}"),
        }),
        Ok(Err(e)) => Err(ThauError::Actor {
            actor,
            message: format!("mailbox: {e}"),
        }),
        Ok(Ok(Err(e))) => Err(ThauError::Actor {
            actor,
            message: e.to_string(),
        }),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}
