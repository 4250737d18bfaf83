//! How [`Runtime::start`](super::Runtime::start) starts each kind of actor:
//! [`check_params`] reads an agent file's `[params]` the way its actor will (so a typo
//! fails the start, not a request), and [`start_fn`] names the one function that starts
//! that kind — on its own arbiter under a `Supervisor` (async actors) or on `SyncArbiter`
//! threads (CPU-heavy ones) — and records its address in [`Addrs`](super::Addrs).
//!
//! Kinds start in [`ActorKind`] order, so each actor is handed [`Recipient`]s of the
//! actors it sends to that started before it; the GapDetector, which also feeds later
//! ones, is wired by a `ConnectLoop` once every actor runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::de::DeserializeOwned;

use super::agents::{ActorKind, AgentSpec};
use super::events::{EventKind, RuntimeEvent};
use super::Runtime;
use crate::actors::episodic_memory::EpisodicMemory;
use crate::actors::gap_detector::{ConnectLoop, GapDetector};
use crate::actors::image_tool::{ImageTool, ImageToolParams};
use crate::actors::inference::{Inference, WeightsCell};
use crate::actors::learner::{learner_params, Learner, LearnerLinks};
use crate::actors::long_term_memory::LongTermMemory;
use crate::actors::questioner::{Questioner, QuestionerParams};
use crate::actors::short_term_memory::ShortTermMemory;
use crate::actors::tool_router::{ToolRouter, ToolRouterParams};
use crate::actors::tuner::{tuning_setup, LearningSignal, Tuner, TunerLinks};
use crate::actors::{ActorBase, Flush, InjectFault, Ping};
use crate::error::{Result, ThauError};
use crate::learn::gaps::ThresholdConfig;
use crate::model::generate::SamplingParams;
use crate::tools::ToolRegistry;

/// The type-erased handles of the common messages of one running actor.
pub(super) struct Common {
    pub ping: Recipient<Ping>,
    pub flush: Recipient<Flush>,
    pub fault: Recipient<InjectFault>,
}

fn common<A>(addr: &Addr<A>) -> Common
where
    A: Actor + Handler<Ping> + Handler<Flush> + Handler<InjectFault>,
    A::Context: ToEnvelope<A, Ping> + ToEnvelope<A, Flush> + ToEnvelope<A, InjectFault>,
{
    Common {
        ping: addr.clone().recipient(),
        flush: addr.clone().recipient(),
        fault: addr.clone().recipient(),
    }
}

/// A recipient of `M` at a running actor, if it runs.
fn to<M, A>(addr: &Option<Addr<A>>) -> Option<Recipient<M>>
where
    M: Message + Send + 'static,
    M::Result: Send,
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
{
    addr.clone().map(|a| a.recipient())
}

/// Reads `[params]` into the type its actor reads them into.
fn parse<T: DeserializeOwned>(spec: &AgentSpec) -> std::result::Result<(), String> {
    spec.params
        .clone()
        .try_into::<T>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks the `[params]` of `kind`'s agent file (`specs` holds every agent file: the
/// Tuner reads the knobs' configured values from the actors it tunes).
pub(super) fn check_params(
    kind: ActorKind,
    spec: &AgentSpec,
    specs: &BTreeMap<ActorKind, AgentSpec>,
) -> Result<()> {
    let params = |r: std::result::Result<(), String>| {
        r.map_err(|e| ThauError::Invalid(format!("agents/{}.toml [params]: {e}", kind.name())))
    };
    match kind {
        ActorKind::Inference => params(parse::<SamplingParams>(spec)),
        ActorKind::Learner => params(learner_params(&spec.params).map(drop)),
        ActorKind::Questioner => params(parse::<QuestionerParams>(spec)),
        ActorKind::GapDetector => params(parse::<ThresholdConfig>(spec)),
        ActorKind::ImageTool => params(ImageToolParams::from_spec(&spec.params).map(drop)),
        ActorKind::ToolRouter => {
            params(parse::<ToolRouterParams>(spec))?;
            // The registry is compiled in: failing to build it is THAU's fault, not the user's.
            ToolRegistry::builtin()
                .map(drop)
                .map_err(ThauError::Runtime)
        }
        // Its errors already name the file they come from.
        ActorKind::Tuner if spec.enabled => {
            tuning_setup(specs).map(drop).map_err(ThauError::Invalid)
        }
        ActorKind::Tuner
        | ActorKind::EpisodicMemory
        | ActorKind::LongTermMemory
        | ActorKind::ShortTermMemory => Ok(()),
    }
}

/// Starts one actor of a kind on a runtime: its address goes into `rt.addrs`.
pub(super) type StartFn = fn(&mut Runtime, ActorBase, AgentSpec) -> Result<Common>;

/// The function that starts `kind`.
pub(super) fn start_fn(kind: ActorKind) -> StartFn {
    match kind {
        ActorKind::EpisodicMemory => start_episodic_memory,
        ActorKind::LongTermMemory => start_long_term_memory,
        ActorKind::ShortTermMemory => start_short_term_memory,
        ActorKind::Inference => start_inference,
        ActorKind::ImageTool => start_image_tool,
        ActorKind::ToolRouter => start_tool_router,
        ActorKind::GapDetector => start_gap_detector,
        ActorKind::Learner => start_learner,
        ActorKind::Questioner => start_questioner,
        ActorKind::Tuner => start_tuner,
    }
}

/// Starts an async actor on its own arbiter under a supervisor; answers its address and
/// the arbiter (kept by the runtime, which stops it on shutdown).
fn start_async<A, F>(rt: &mut Runtime, make: F) -> (Addr<A>, ArbiterHandle)
where
    A: Actor<Context = Context<A>> + Supervised,
    F: FnOnce() -> A + Send + 'static,
{
    let arbiter = Arbiter::new();
    let handle = arbiter.handle();
    let addr = Supervisor::start_in_arbiter(&handle, move |_| make());
    rt.arbiters.push(arbiter);
    (addr, handle)
}

// Memory actors open their stores under <home>/memory. EpisodicMemory starts first
// (ActorKind order) so the others can file episodes there.

fn start_episodic_memory(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let dir = rt.home.memory();
    let (addr, _) = start_async(rt, move || EpisodicMemory::new(base, &spec, &dir));
    rt.addrs.episodic_memory = Some(addr.clone());
    Ok(common(&addr))
}

fn start_long_term_memory(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let (dir, checkpoints) = (rt.home.memory(), rt.home.checkpoints());
    let cfg = rt.config.memory.clone();
    let (addr, _) = start_async(rt, move || {
        LongTermMemory::new(base, &spec, &dir, &checkpoints, &cfg)
    });
    rt.addrs.long_term_memory = Some(addr.clone());
    Ok(common(&addr))
}

fn start_short_term_memory(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let (dir, checkpoints) = (rt.home.memory(), rt.home.checkpoints());
    let budget = rt.config.memory.short_term_tokens;
    let episodic = to(&rt.addrs.episodic_memory);
    let (addr, _) = start_async(rt, move || {
        ShortTermMemory::new(base, &spec, &dir, &checkpoints, budget, episodic)
    });
    rt.addrs.short_term_memory = Some(addr.clone());
    Ok(common(&addr))
}

fn start_inference(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    // One cell for all threads, so a weight swap reaches each of them, and one decode
    // thread batching every session's generations.
    let cell = Arc::new(
        WeightsCell::with_engine().map_err(|e| ThauError::Runtime(format!("inference: {e}")))?,
    );
    rt.inference_cell = Some(cell.clone());
    let checkpoints = rt.home.checkpoints();
    let gguf = Some(&rt.config.model.gguf)
        .filter(|g| !g.is_empty())
        .map(PathBuf::from);
    let device = crate::model::device(&rt.config.device)?;
    let addr = SyncArbiter::start(spec.threads, move || {
        Inference::new(
            base.clone(),
            &spec,
            checkpoints.clone(),
            gguf.clone(),
            device.clone(),
        )
        .with_weights_cell(cell.clone())
    });
    rt.addrs.inference = Some(addr.clone());
    Ok(common(&addr))
}

fn start_image_tool(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let images = rt.home.images();
    let addr = SyncArbiter::start(spec.threads, move || {
        ImageTool::new(base.clone(), &spec, &images)
    });
    rt.addrs.image_tool = Some(addr.clone());
    Ok(common(&addr))
}

fn start_tool_router(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let image = to(&rt.addrs.image_tool);
    let episodic = to(&rt.addrs.episodic_memory);
    let (addr, _) = start_async(rt, move || ToolRouter::new(base, &spec, image, episodic));
    rt.addrs.tool_router = Some(addr.clone());
    Ok(common(&addr))
}

fn start_gap_detector(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    // Its links arrive later, in a `ConnectLoop`: it feeds actors that start after it.
    let (addr, _) = start_async(rt, move || GapDetector::new(base, &spec));
    rt.addrs.gap_detector = Some(addr.clone());
    Ok(common(&addr))
}

fn start_learner(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let links = LearnerLinks {
        inference: to(&rt.addrs.inference),
        gap_detector: to(&rt.addrs.gap_detector),
        episodic: to(&rt.addrs.episodic_memory),
        current: Default::default(),
    };
    let checkpoints = rt.home.checkpoints();
    let device = crate::model::device(&rt.config.device)?;
    let addr = SyncArbiter::start(spec.threads, move || {
        Learner::new(base.clone(), &spec, checkpoints.clone(), links.clone())
            .with_device(device.clone())
    });
    rt.addrs.learner = Some(addr.clone());
    Ok(common(&addr))
}

fn start_questioner(rt: &mut Runtime, base: ActorBase, spec: AgentSpec) -> Result<Common> {
    let gaps = to(&rt.addrs.gap_detector);
    let episodic = to(&rt.addrs.episodic_memory);
    let (addr, _) = start_async(rt, move || Questioner::new(base, &spec, gaps, episodic));
    rt.addrs.questioner = Some(addr.clone());
    Ok(common(&addr))
}

fn start_tuner(rt: &mut Runtime, base: ActorBase, _spec: AgentSpec) -> Result<Common> {
    // Started last (ActorKind order): the actors it tunes already run.
    let links = TunerLinks {
        learner: to(&rt.addrs.learner),
        inference: to(&rt.addrs.inference),
        gap_detector: to(&rt.addrs.gap_detector),
        episodic: to(&rt.addrs.episodic_memory),
    };
    let home = rt.home.root.clone();
    let specs = rt.specs.clone();
    let (addr, arbiter) = start_async(rt, move || Tuner::new(base, &home, &specs, links));
    // The learning signals reach the Tuner from the event bus, forwarded by a task on the
    // Tuner's own arbiter (stopped with it).
    let mut rx = rt.events.subscribe();
    let tuner = addr.clone().recipient::<LearningSignal>();
    arbiter.spawn(async move {
        loop {
            match rx.recv().await {
                Ok(RuntimeEvent {
                    kind: EventKind::Learning { event },
                    ..
                }) => tuner.do_send(LearningSignal(event)),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "tuner fell behind the event bus");
                }
                Err(_) => break,
            }
        }
    });
    rt.addrs.tuner = Some(addr.clone());
    Ok(common(&addr))
}

/// The GapDetector starts before the actors it feeds: wires it once every actor runs.
pub(super) fn connect_loop(rt: &Runtime) {
    if let Some(g) = &rt.addrs.gap_detector {
        g.do_send(ConnectLoop {
            inference: to(&rt.addrs.inference),
            learner: to(&rt.addrs.learner),
            questioner: to(&rt.addrs.questioner),
            episodic: to(&rt.addrs.episodic_memory),
            long_term: to(&rt.addrs.long_term_memory),
        });
    }
}
