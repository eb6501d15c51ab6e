//! One app's actor: its state, its message loop, command routing and reloads.

use super::control::{self, AppState, Command, ControlError, Outcome};
use super::instance::{InstanceState, Slot, CRASH_LOOP_AFTER};
use super::output::Output;
use super::process::Ports;
use super::recycle::Roll;
use super::revision::Revision;
use super::sampler::Sampler;
use super::scale::initial_target;
use super::status::{AppView, Views};
use super::{autoheal, crash::Ended};
use crate::config::App;
use crate::observe::events::{Event, Events};
use crate::upstream::{Peer, Pool};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Where the reply to one command goes.
pub(super) type ReplyTo = oneshot::Sender<control::Reply>;

/// What the app actor hears.
pub(super) enum Msg {
    Command(Command, ReplyTo),
    Exited {
        slot: u32,
        gen: u64,
        how: Ended,
    },
    Ready {
        slot: u32,
        gen: u64,
        took: Duration,
    },
    NotReady {
        slot: u32,
        gen: u64,
        why: String,
    },
    RestartDue {
        slot: u32,
    },
    Health {
        slot: u32,
        gen: u64,
        ok: Result<(), String>,
    },
    /// A recycle ended (for rolling restarts): slot, outcome.
    RecycleDone {
        outcome: control::Reply,
    },
    /// Time to sample the instances and evaluate AutoHeal and autoscale.
    Tick,
    /// The actions of an AutoHeal firing finished.
    AutohealDone,
    /// A reloaded config for this app, the pool its routes now point at, where the
    /// reply goes once it is applied, and where the outcome of the roll to its
    /// revision goes once that is done.
    Update(Box<App>, Arc<Pool>, ReplyTo, Option<ReplyTo>),
}

/// A replacement that did not get ready: the instance, its pid, why (the exit or
/// the readiness timeout, with the app's own line), and that line alone.
#[derive(Debug, Clone)]
pub(super) struct StartFailure {
    pub(super) instance: String,
    pub(super) pid: u32,
    pub(super) reason: String,
    pub(super) error_line: Option<String>,
}

/// How often instances are sampled and rules evaluated.
pub(super) const TICK: Duration = Duration::from_millis(500);

/// One app's state: its slots (each with its processes), the pool it publishes
/// into, AutoHeal and autoscale bookkeeping, and the replies still owed.
pub(super) struct Actor {
    pub(super) app: App,
    pub(super) pool: Arc<Pool>,
    pub(super) events: Events,
    pub(super) output: Output,
    pub(super) ports: Arc<Ports>,
    pub(super) logs_dir: PathBuf,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) slots: BTreeMap<u32, Slot>,
    pub(super) target: u32,
    pub(super) next_gen: u64,
    pub(super) recycle_waiters: HashMap<u32, Vec<ReplyTo>>,
    /// A rolling restart or a reload's roll under way.
    pub(super) rolling: Option<Roll>,
    /// The last revision that got ready: instances start (and restart after a crash)
    /// with it. It becomes the config's revision only when a roll to it succeeds.
    pub(super) stable: Arc<Revision>,
    /// The config's revision (differs from `stable` while a roll runs or after one
    /// failed).
    pub(super) wanted: Arc<Revision>,
    /// The last replacement that did not get ready: which, and why.
    pub(super) failed_start: Option<StartFailure>,
    pub(super) shutdown: Option<ReplyTo>,
    pub(super) view: Arc<RwLock<AppView>>,
    /// The pool before the last reload: still served by requests queued in it.
    pub(super) previous_pool: Option<Arc<Pool>>,
    pub(super) diagnostics_dir: PathBuf,
    pub(super) sampler: Sampler,
    /// When AutoHeal recycled an instance of this app (for `max_recycles`).
    pub(super) recycles: VecDeque<Instant>,
    /// (process generation, rule) pairs that fired or were suppressed: once each.
    pub(super) fired: HashSet<(u64, usize)>,
    pub(super) suppressed: HashSet<(u64, usize)>,
    pub(super) held: HashMap<(u64, usize), autoheal::Held>,
    /// An AutoHeal recycle is under way (one at a time per app).
    pub(super) healing: bool,
    /// `healgate scale` overrides autoscale until the next reload.
    pub(super) manual_scale: bool,
    pub(super) last_scale: Instant,
    pub(super) last_busy: Instant,
}

/// What every app actor shares, and how one is started.
pub(super) struct Spawner {
    pub(super) output: Output,
    pub(super) ports: Arc<Ports>,
    pub(super) events: Events,
    pub(super) data_dir: PathBuf,
    pub(super) views: Views,
}

impl Spawner {
    pub(super) fn spawn(
        &self,
        app: App,
        pool: Arc<Pool>,
    ) -> (mpsc::UnboundedSender<Msg>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Arc::new(RwLock::new(AppView {
            name: app.name.clone(),
            state: AppState::Starting,
            target: app.instances,
            reason: None,
            slots: Vec::new(),
            revision: String::new(),
            stable_revision: String::new(),
        }));
        self.views.write().unwrap_or_else(|p| p.into_inner()).push((
            app.name.clone(),
            view.clone(),
            pool.clone(),
        ));
        let revision = Revision::of(&app);
        let actor = Actor {
            stable: revision.clone(),
            wanted: revision,
            failed_start: None,
            target: initial_target(&app),
            diagnostics_dir: self.data_dir.join("diagnostics"),
            sampler: Sampler::default(),
            recycles: VecDeque::new(),
            fired: HashSet::new(),
            suppressed: HashSet::new(),
            held: HashMap::new(),
            healing: false,
            manual_scale: false,
            last_scale: Instant::now(),
            last_busy: Instant::now(),
            logs_dir: self.data_dir.join("logs").join("apps").join(&app.name),
            app,
            pool,
            previous_pool: None,
            events: self.events.clone(),
            output: self.output.clone(),
            ports: self.ports.clone(),
            tx: tx.clone(),
            slots: BTreeMap::new(),
            next_gen: 0,
            recycle_waiters: HashMap::new(),
            rolling: None,
            shutdown: None,
            view,
        };
        (tx, tokio::spawn(actor.run(rx)))
    }

    pub(super) fn set_pool(&self, app: &str, pool: &Arc<Pool>) {
        for (n, _, p) in self
            .views
            .write()
            .unwrap_or_else(|x| x.into_inner())
            .iter_mut()
        {
            if n == app {
                *p = pool.clone();
            }
        }
    }
}

impl Actor {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        for n in 1..=self.target {
            self.slots.insert(n, self.new_slot(n));
            self.start_current(n).await;
        }
        self.refresh();
        let ticker = self.tx.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(TICK);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                if ticker.send(Msg::Tick).is_err() {
                    return;
                }
            }
        });
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Command(cmd, reply) => self.command(cmd, reply).await,
                Msg::Exited { slot, gen, how } => self.exited(slot, gen, how),
                Msg::Ready { slot, gen, took } => self.ready(slot, gen, took),
                Msg::NotReady { slot, gen, why } => self.not_ready(slot, gen, why),
                Msg::RestartDue { slot } => {
                    let due = self.slots.get(&slot).is_some_and(|s| {
                        s.current.is_none() && s.resting.is_backing_off() && !s.removing
                    });
                    if due && self.shutdown.is_none() {
                        self.start_current(slot).await;
                    }
                }
                Msg::Health { slot, gen, ok } => self.health(slot, gen, ok).await,
                Msg::RecycleDone { outcome } => self.roll_on(outcome).await,
                Msg::Tick => self.tick().await,
                Msg::AutohealDone => self.healing = false,
                Msg::Update(app, pool, reply, rolled) => {
                    let _ = reply.send(self.update(*app, pool, rolled).await);
                }
            }
            self.refresh();
            if self.shutdown.is_some() && self.all_stopped() {
                if let Some(r) = self.shutdown.take() {
                    let _ = r.send(Ok(
                        format!("{}: all instances stopped", self.app.name).into()
                    ));
                }
                return;
            }
        }
    }

    pub(super) fn new_slot(&self, n: u32) -> Slot {
        Slot {
            id: format!("{}#{n}", self.app.name),
            current: None,
            replacement: None,
            retiring: Vec::new(),
            restarts: 0,
            attempt: 0,
            fast_exits: 0,
            last_exit: None,
            removing: false,
            resting: InstanceState::Stopped,
            streak: Default::default(),
            failing_since: None,
        }
    }

    pub(super) async fn command(&mut self, cmd: Command, reply: ReplyTo) {
        match cmd {
            Command::Recycle { instance, reason } if instance.app == self.app.name => {
                self.recycle(instance.slot, reason, self.stable.clone(), reply)
                    .await
            }
            Command::Recycle { instance, .. } => {
                let _ = reply.send(Err(ControlError::UnknownInstance(instance.to_string())));
            }
            Command::Restart { .. } => {
                if self.rolling.is_some() {
                    let _ = reply.send(Err(ControlError::Busy(format!(
                        "{}: a restart is already rolling",
                        self.app.name
                    ))));
                    return;
                }
                let order: Vec<u32> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| !s.removing && s.current.is_some())
                    .map(|(n, _)| *n)
                    .collect();
                if order.is_empty() {
                    let _ = reply.send(Err(ControlError::Refused(format!(
                        "{}: no running instance to restart",
                        self.app.name
                    ))));
                    return;
                }
                self.rolling = Some(Roll::restart(self.stable.clone(), order, reply));
                self.roll_on(Ok(Outcome::from(String::new()))).await;
            }
            Command::Scale { instances, .. } => {
                if self.app.autoscale.is_some() {
                    self.manual_scale = true;
                }
                let _ = reply.send(self.scale(instances, "requested").await);
            }
            Command::Configure { .. } | Command::Remove { .. } | Command::Reload => {
                let _ = reply.send(Err(ControlError::Refused(
                    "handled by the supervisor, not an app".into(),
                )));
            }
            Command::Shutdown => {
                self.shutdown = Some(reply);
                self.pool.set_peers(Vec::new());
                for n in self.slots.keys().copied().collect::<Vec<_>>() {
                    self.stop_slot(n);
                }
            }
        }
    }

    /// Apply a reloaded config: rules and limits apply from now on, a changed count
    /// scales, and a new revision (command, cwd, env, health check, startup timeout)
    /// rolls every instance with overlap. The reply comes once the config is applied;
    /// the roll's outcome goes to `rolled` when the roll is done (at once when there
    /// is none). A manual scale stops overriding autoscale.
    pub(super) async fn update(
        &mut self,
        app: App,
        pool: Arc<Pool>,
        rolled: Option<ReplyTo>,
    ) -> control::Reply {
        let old_instances = std::mem::replace(&mut self.app, app).instances;
        if !Arc::ptr_eq(&pool, &self.pool) {
            self.previous_pool = Some(std::mem::replace(&mut self.pool, pool));
            self.publish();
        }
        self.manual_scale = false;
        self.wanted = Revision::of(&self.app);
        let new = self.app.clone();
        let name = new.name.clone();
        let mut did = Vec::new();
        if new.autoscale.is_none() && old_instances != new.instances {
            self.scale(new.instances, "config reloaded").await?;
            did.push(format!("scaled to {}", new.instances));
        } else if let Some(a) = &new.autoscale {
            let t = self.target.clamp(a.min, a.max);
            if t != self.target {
                self.scale(t, "config reloaded: autoscale bounds").await?;
                did.push(format!("scaled to {t}"));
            }
        }
        let to = self.wanted.clone();
        if to.id != self.stable.id {
            let serving = self
                .slots
                .values()
                .any(|s| !s.removing && s.current.as_ref().is_some_and(|p| p.state.is_serving()));
            let starting = self.slots.values().any(|s| {
                !s.removing
                    && s.current
                        .as_ref()
                        .is_some_and(|p| p.state == InstanceState::Starting)
            });
            let refused = if self.rolling.is_some() {
                Some(ControlError::Busy(format!(
                    "{name}: a restart is rolling; revision {} was not started: reload again when it has finished",
                    to.id
                )))
            } else if !serving && starting {
                Some(ControlError::Busy(format!(
                    "{name}: its instances are still starting; revision {} was not started: reload again once they are ready",
                    to.id
                )))
            } else {
                None
            };
            if let Some(e) = refused {
                self.events.emit(Event::ReloadFailed {
                    app: name.clone(),
                    instance: None,
                    pid: 0,
                    reason: e.to_string(),
                    error_line: None,
                    revision: to.id.clone(),
                    stays_on: self.stable.id.clone(),
                });
                if let Some(r) = rolled {
                    let _ = r.send(Err(e));
                }
                did.push(format!("revision {} not started", to.id));
                return Ok(format!("{name}: {}", did.join(", ")).into());
            }
            if !serving {
                // Nothing serves that a failed roll could leave serving: the slots
                // start with the new revision when their restart is due.
                self.stable = to.clone();
                did.push(format!(
                    "no instance was serving: revision {} starts from now on",
                    to.id
                ));
            } else {
                let order = self.slots.keys().copied().collect();
                let (reply, _) = oneshot::channel();
                let roll = Roll::reload(to.clone(), order, rolled.unwrap_or(reply));
                self.rolling = Some(roll);
                self.roll_on(Ok(Outcome::from(String::new()))).await;
                did.push(format!("rolling to revision {}", to.id));
                return Ok(format!("{name}: {}", did.join(", ")).into());
            }
        }
        if did.is_empty() {
            did.push(format!("settings updated (revision {})", to.id));
        }
        let msg = format!("{name}: {}", did.join(", "));
        if let Some(r) = rolled {
            let _ = r.send(Ok(msg.clone().into()));
        }
        Ok(msg.into())
    }

    /// Every [`TICK`]: measure every instance's process tree, then evaluate AutoHeal
    /// rules and autoscale.
    pub(super) async fn tick(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let roots: Vec<u32> = self
            .slots
            .values()
            .filter_map(|s| s.current.as_ref()?.pid)
            .collect();
        let samples = self.sampler.sample(&roots);
        for s in self.slots.values_mut() {
            if let Some(p) = s.current.as_mut() {
                p.sample = p.pid.and_then(|pid| samples.get(&pid).copied());
            }
        }
        // Forget rule state of processes that are gone.
        let live: HashSet<u64> = self
            .slots
            .values()
            .flat_map(|s| s.current.iter().chain(s.replacement.iter().map(|(p, _)| p)))
            .map(|p| p.gen)
            .collect();
        self.fired.retain(|(g, _)| live.contains(g));
        self.suppressed.retain(|(g, _)| live.contains(g));
        self.held.retain(|(g, _), _| live.contains(g));
        self.autoheal();
        self.autoscale().await;
    }

    pub(super) fn drop_removed(&mut self, n: u32) {
        if let Some(s) = self.slots.get(&n) {
            if s.removing && s.current.is_none() && s.replacement.is_none() && s.retiring.is_empty()
            {
                self.slots.remove(&n);
            }
        }
    }

    pub(super) fn all_stopped(&self) -> bool {
        self.slots
            .values()
            .all(|s| s.current.is_none() && s.replacement.is_none() && s.retiring.is_empty())
    }

    /// Put the ready instances into the pool; say why the app cannot serve when none is.
    pub(super) fn publish(&self) {
        let peers: Vec<Arc<Peer>> = self
            .slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .filter(|p| p.state.is_serving())
            .map(|p| p.peer.clone())
            .collect();
        let none_ready = peers.is_empty();
        if let Some(prev) = &self.previous_pool {
            prev.set_peers(peers.clone());
        }
        self.pool.set_peers(peers);
        let looping = self
            .slots
            .values()
            .filter(|s| s.fast_exits >= CRASH_LOOP_AFTER)
            .collect::<Vec<_>>();
        let reason = (none_ready && !looping.is_empty() && self.shutdown.is_none()).then(|| {
            let s = looping[0];
            format!(
                "{} is in a crash loop ({} fast exits in a row); last: {}",
                self.app.name,
                s.fast_exits,
                s.last_exit.as_deref().unwrap_or("unknown")
            )
        });
        self.pool.set_unavailable_reason(reason);
    }
}
