//! The supervisor: runs every `[[app]]`'s instances, restarts the ones that exit,
//! recycles with overlap, and publishes ready instances into the app's pool.
//!
//! One actor task per app owns all of that app's state; everything that takes time
//! (starting, readiness, health checks, draining) runs in small tasks that report
//! back to the actor as [`Msg`]s. The proxy only sees the pool: the supervisor
//! publishes peers into it and never the reverse.
//!
//! Instance states: `starting → ready → (unhealthy) → draining → stopped`, and
//! `crashed → backoff → starting`. Slot ids (`web#1`, `web#2` ...) are stable across
//! restarts and recycles.

pub mod autoheal;
pub mod control;
pub mod output;
pub mod process;
pub mod sampler;

use crate::config::{Action, App};
use crate::observe::events::{Event, Events};
use crate::upstream::stats::PeerStats;
use crate::upstream::{ExitNotice, Peer, Pool};
use control::{AppStatus, Command, Envelope, Handle, InstanceStatus};
use output::{Output, Tail};
use process::{Ports, Spec};
use sampler::{Sample, Sampler};
use std::collections::{BTreeMap, HashMap};
use std::collections::{HashSet, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Backoff of the first restart; doubles per fast exit in a row, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An instance that ran this long was stable: its next exit starts the backoff over.
const STABLE: Duration = Duration::from_secs(30);
/// An exit this soon after start is a fast exit; three in a row is a crash loop.
const FAST_EXIT: Duration = Duration::from_secs(10);
const CRASH_LOOP_AFTER: u32 = 3;
/// How often readiness is polled while an instance starts.
const READY_POLL: Duration = Duration::from_millis(100);
/// After SIGTERM, how long a process may take to exit before SIGKILL (within grace).
const TERM_WAIT: Duration = Duration::from_secs(10);

type Reply = oneshot::Sender<Result<String, String>>;

/// How a process ended.
#[derive(Debug)]
enum Ended {
    Status(ExitStatus),
    SpawnFailed(String),
}

/// What the app actor hears.
enum Msg {
    Command(Command, Reply),
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
        outcome: Result<String, String>,
    },
    /// Time to sample the instances and evaluate AutoHeal and autoscale.
    Tick,
    /// The actions of an AutoHeal firing finished.
    AutohealDone,
    /// A reloaded config for this app, and the pool its routes now point at.
    Update(Box<App>, Arc<Pool>, Reply),
}

/// How often instances are sampled and rules evaluated.
const TICK: Duration = Duration::from_millis(500);

/// One running process of a slot.
struct Proc {
    gen: u64,
    pid: Option<u32>,
    port: u16,
    started: Instant,
    peer: Arc<Peer>,
    ready: bool,
    /// We are stopping it on purpose (recycle, scale-in, shutdown).
    stopping: bool,
    exited: watch::Receiver<bool>,
    /// Stops its health checks.
    cancel: watch::Sender<bool>,
    tail: Tail,
    /// Why it did not become ready, when that is why it is being killed.
    failed_start: Option<String>,
    /// The last measurement of its process tree.
    sample: Option<Sample>,
}

impl Proc {
    /// A process just started (or that failed to start: no pid), not yet ready.
    fn new(
        gen: u64,
        pid: Option<u32>,
        port: u16,
        peer: Arc<Peer>,
        exited: watch::Receiver<bool>,
        cancel: watch::Sender<bool>,
        tail: Tail,
    ) -> Proc {
        Proc {
            gen,
            pid,
            port,
            started: Instant::now(),
            peer,
            ready: false,
            stopping: false,
            exited,
            cancel,
            tail,
            failed_start: None,
            sample: None,
        }
    }
}

/// A stable instance id and what runs under it.
struct Slot {
    id: String,
    current: Option<Proc>,
    replacement: Option<(Proc, String)>,
    retiring: Vec<Proc>,
    restarts: u32,
    /// Restarts since the last stable run: sets the backoff.
    attempt: u32,
    fast_exits: u32,
    last_exit: Option<String>,
    removing: bool,
    backoff: bool,
    health_fails: u32,
    health_oks: u32,
    /// Since when health checks fail (for the `unhealthy` trigger).
    failing_since: Option<Instant>,
}

impl Slot {
    /// A new process serves the slot: the health verdicts of the old one are not its.
    fn reset_health(&mut self) {
        self.health_fails = 0;
        self.health_oks = 0;
        self.failing_since = None;
    }
}

/// What status readers see of a slot.
#[derive(Clone)]
struct SlotView {
    id: String,
    pid: Option<u32>,
    port: u16,
    state: &'static str,
    started: Option<Instant>,
    restarts: u32,
    last_exit: Option<String>,
    peer: Option<Arc<Peer>>,
    sample: Option<Sample>,
}

#[derive(Clone)]
struct AppView {
    name: String,
    state: &'static str,
    target: u32,
    reason: Option<String>,
    slots: Vec<SlotView>,
}

struct Actor {
    app: App,
    pool: Arc<Pool>,
    events: Events,
    output: Output,
    ports: Arc<Ports>,
    logs_dir: PathBuf,
    tx: mpsc::UnboundedSender<Msg>,
    slots: BTreeMap<u32, Slot>,
    target: u32,
    next_gen: u64,
    recycle_waiters: HashMap<u32, Vec<Reply>>,
    rolling: Option<(Vec<u32>, Reply, usize)>,
    shutdown: Option<Reply>,
    view: Arc<RwLock<AppView>>,
    /// The pool before the last reload: still served by requests queued in it.
    previous_pool: Option<Arc<Pool>>,
    diagnostics_dir: PathBuf,
    sampler: Sampler,
    /// When AutoHeal recycled an instance of this app (for `max_recycles`).
    recycles: VecDeque<Instant>,
    /// (process generation, rule) pairs that fired or were suppressed: once each.
    fired: HashSet<(u64, usize)>,
    suppressed: HashSet<(u64, usize)>,
    held: HashMap<(u64, usize), autoheal::Held>,
    /// An AutoHeal recycle is under way (one at a time per app).
    healing: bool,
    /// `healgate scale` overrides autoscale until the next reload.
    manual_scale: bool,
    last_scale: Instant,
    last_busy: Instant,
}

/// Start supervising `apps` (each with the pool its routes point at). Returns the
/// control handle and the supervisor's task.
pub fn start(
    apps: Vec<(App, Arc<Pool>)>,
    events: Events,
    data_dir: &Path,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let ctx = Spawner {
        output: Output::start(),
        ports: Arc::new(Ports::default()),
        events,
        data_dir: data_dir.to_owned(),
        views: Arc::default(),
    };
    let mut actors: HashMap<String, mpsc::UnboundedSender<Msg>> = HashMap::new();
    let mut tasks = Vec::new();
    for (app, pool) in apps {
        let name = app.name.clone();
        let (tx, task) = ctx.spawn(app, pool);
        actors.insert(name, tx);
        tasks.push(task);
    }
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Envelope>();
    let views = ctx.views.clone();
    let router = tokio::spawn(async move {
        while let Some(Envelope { command, reply }) = ctl_rx.recv().await {
            match command {
                Command::Shutdown => {
                    let waits: Vec<_> = actors
                        .values()
                        .filter_map(|tx| {
                            let (r, w) = oneshot::channel();
                            tx.send(Msg::Command(Command::Shutdown, r))
                                .is_ok()
                                .then_some(w)
                        })
                        .collect();
                    for w in waits {
                        let _ = w.await;
                    }
                    ctx.output.flush();
                    let _ = reply.send(Ok("all instances stopped".into()));
                    break;
                }
                Command::Configure { app, pool } => match actors.get(&app.name) {
                    Some(tx) => {
                        ctx.set_pool(&app.name, &pool);
                        if let Err(mpsc::error::SendError(Msg::Update(_, _, r))) =
                            tx.send(Msg::Update(app, pool, reply))
                        {
                            let _ = r.send(Err("the app is stopped".into()));
                        }
                    }
                    None => {
                        let name = app.name.clone();
                        let (tx, task) = ctx.spawn(*app, pool);
                        actors.insert(name.clone(), tx);
                        tasks.push(task);
                        let _ = reply.send(Ok(format!("{name}: started")));
                    }
                },
                Command::Remove { app } => match actors.remove(&app) {
                    Some(tx) => {
                        let (r, w) = oneshot::channel();
                        let _ = tx.send(Msg::Command(Command::Shutdown, r));
                        let views = ctx.views.clone();
                        tokio::spawn(async move {
                            let outcome = w.await.unwrap_or_else(|_| Ok(format!("{app}: stopped")));
                            views
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .retain(|(n, _, _)| *n != app);
                            let _ = reply.send(outcome);
                        });
                    }
                    None => {
                        let _ = reply.send(Err(format!("unknown app {app:?}")));
                    }
                },
                cmd => {
                    let app = match &cmd {
                        Command::Restart { app } | Command::Scale { app, .. } => app.clone(),
                        Command::Recycle { instance, .. } => {
                            instance.split('#').next().unwrap_or("").to_owned()
                        }
                        _ => String::new(),
                    };
                    match actors.get(&app) {
                        Some(tx) => {
                            if let Err(mpsc::error::SendError(Msg::Command(_, r))) =
                                tx.send(Msg::Command(cmd, reply))
                            {
                                let _ = r.send(Err(format!("app {app} is stopped")));
                            }
                        }
                        None => {
                            let _ = reply.send(Err(format!("unknown app {app:?}")));
                        }
                    }
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let status = Arc::new(move || {
        views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, v, pool)| app_status(&v.read().unwrap_or_else(|p| p.into_inner()), pool))
            .collect()
    });
    (Handle::new(ctl_tx, status), router)
}

/// Status views of every app: (name, view, the pool it publishes into).
type Views = Arc<RwLock<Vec<(String, Arc<RwLock<AppView>>, Arc<Pool>)>>>;

/// What every app actor shares, and how one is started.
struct Spawner {
    output: Output,
    ports: Arc<Ports>,
    events: Events,
    data_dir: PathBuf,
    views: Views,
}

impl Spawner {
    fn spawn(
        &self,
        app: App,
        pool: Arc<Pool>,
    ) -> (mpsc::UnboundedSender<Msg>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Arc::new(RwLock::new(AppView {
            name: app.name.clone(),
            state: "starting",
            target: app.instances,
            reason: None,
            slots: Vec::new(),
        }));
        self.views.write().unwrap_or_else(|p| p.into_inner()).push((
            app.name.clone(),
            view.clone(),
            pool.clone(),
        ));
        let actor = Actor {
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

    fn set_pool(&self, app: &str, pool: &Arc<Pool>) {
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

fn initial_target(app: &App) -> u32 {
    match &app.autoscale {
        Some(a) => app.instances.clamp(a.min, a.max),
        None => app.instances,
    }
}

fn request_stats(st: &PeerStats) -> control::RequestStats {
    use std::sync::atomic::Ordering::Relaxed;
    let by_class = st
        .by_class
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{}xx", i + 1), c.load(Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    control::RequestStats {
        total: st.requests.load(Relaxed),
        by_class,
        errors: st
            .errors()
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect(),
        p50_ms: st.quantile_ms(0.5),
        p99_ms: st.quantile_ms(0.99),
    }
}

fn app_status(v: &AppView, pool: &Pool) -> AppStatus {
    let instances: Vec<InstanceStatus> = v
        .slots
        .iter()
        .map(|s| {
            let (memory_bytes, cpu_s) = match &s.sample {
                Some(x) => (x.rss, x.cpu_s),
                None => s.pid.and_then(process::stats).unwrap_or((0, 0.0)),
            };
            InstanceStatus {
                id: s.id.clone(),
                pid: s.pid,
                port: s.port,
                state: s.state,
                uptime_s: s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0),
                memory_bytes,
                cpu_s,
                inflight: s.peer.as_ref().map(|p| p.outstanding()).unwrap_or(0),
                restarts: s.restarts,
                last_exit: s.last_exit.clone(),
                cpu_pct: s
                    .sample
                    .map(|x| (x.cpu_pct * 10.0).round() / 10.0)
                    .unwrap_or(0.0),
                threads: s.sample.map(|x| x.threads).unwrap_or(0),
                open_files: s.sample.map(|x| x.open_files).unwrap_or(0),
                requests: s
                    .peer
                    .as_ref()
                    .map(|p| request_stats(&p.stats))
                    .unwrap_or_default(),
            }
        })
        .collect();
    AppStatus {
        name: v.name.clone(),
        state: v.state,
        target: v.target,
        ready: instances.iter().filter(|i| i.state == "ready").count() as u32,
        queued: pool.queued(),
        instances,
        reason: v.reason.clone(),
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
                    let due = self
                        .slots
                        .get(&slot)
                        .is_some_and(|s| s.current.is_none() && s.backoff && !s.removing);
                    if due && self.shutdown.is_none() {
                        self.start_current(slot).await;
                    }
                }
                Msg::Health { slot, gen, ok } => self.health(slot, gen, ok).await,
                Msg::RecycleDone { outcome } => self.roll_on(outcome).await,
                Msg::Tick => self.tick().await,
                Msg::AutohealDone => self.healing = false,
                Msg::Update(app, pool, reply) => {
                    let _ = reply.send(self.update(*app, pool).await);
                }
            }
            self.refresh();
            if self.shutdown.is_some() && self.all_stopped() {
                if let Some(r) = self.shutdown.take() {
                    let _ = r.send(Ok(format!("{}: all instances stopped", self.app.name)));
                }
                return;
            }
        }
    }

    fn new_slot(&self, n: u32) -> Slot {
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
            backoff: false,
            health_fails: 0,
            health_oks: 0,
            failing_since: None,
        }
    }

    fn log_file(&self, id: &str) -> Arc<PathBuf> {
        Arc::new(self.logs_dir.join(format!("{id}.log")))
    }

    /// Start a process for slot `n`: a free port, the command, output capture, an exit
    /// watcher and a readiness poller, all reporting back to the actor.
    async fn spawn_proc(&mut self, n: u32) -> Proc {
        self.next_gen += 1;
        let gen = self.next_gen;
        let id = format!("{}#{n}", self.app.name);
        let file = self.log_file(&id);
        let tail: Tail = Arc::default();
        let (exited_tx, exited) = watch::channel(false);
        let (cancel, _) = watch::channel(false);
        let port = match self.ports.take() {
            Ok(p) => p,
            Err(e) => {
                let _ = exited_tx.send(true);
                let _ = self.tx.send(Msg::Exited {
                    slot: n,
                    gen,
                    how: Ended::SpawnFailed(format!("no port: {e}")),
                });
                return self.dead_proc(gen, &id, 0, exited, cancel, tail);
            }
        };
        let port_s = port.to_string();
        let argv: Vec<String> = self
            .app
            .command
            .iter()
            .map(|a| a.replace("{port}", &port_s))
            .collect();
        let mut env = self.app.env.clone();
        env.push(("PORT".into(), port_s.clone()));
        env.push(("HEALGATE_INSTANCE".into(), id.clone()));
        let spec = Spec {
            argv,
            cwd: self.app.cwd.clone(),
            env,
        };
        let child = process::spawn(spec).await;
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                self.output.note(&file, &format!("could not start: {e}"));
                let _ = exited_tx.send(true);
                let _ = self.tx.send(Msg::Exited {
                    slot: n,
                    gen,
                    how: Ended::SpawnFailed(e.to_string()),
                });
                return self.dead_proc(gen, &id, port, exited, cancel, tail);
            }
        };
        let pid = child.id();
        self.output.note(
            &file,
            &format!("started pid {} on port {port}", pid.unwrap_or(0)),
        );
        let mut captures = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (o, f) = (self.output.clone(), file.clone());
            captures.push(tokio::spawn(async move {
                o.capture(out, "stdout", f, None).await
            }));
        }
        if let Some(err) = child.stderr.take() {
            let (o, f, t) = (self.output.clone(), file.clone(), tail.clone());
            captures.push(tokio::spawn(async move {
                o.capture(err, "stderr", f, Some(t)).await
            }));
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the last lines (the traceback) arrive before the exit is reported.
            for c in captures {
                let _ = tokio::time::timeout(Duration::from_millis(500), c).await;
            }
            let _ = exited_tx.send(true);
            let how = match status {
                Ok(s) => Ended::Status(s),
                Err(e) => Ended::SpawnFailed(format!("waiting for the process: {e}")),
            };
            let _ = tx.send(Msg::Exited { slot: n, gen, how });
        });
        self.events.emit(
            Event::new("instance_started", &self.app.name)
                .instance(&id)
                .pid(pid.unwrap_or(0))
                .field("port", port),
        );
        let stats = PeerStats::with_windows(autoheal::windows(self.app.autoheal.as_ref()));
        let peer = Arc::new(Peer::instance(&id, port, stats));
        self.watch_ready(n, gen, &peer, exited.clone());
        Proc::new(gen, pid, port, peer, exited, cancel, tail)
    }

    fn dead_proc(
        &self,
        gen: u64,
        id: &str,
        port: u16,
        exited: watch::Receiver<bool>,
        cancel: watch::Sender<bool>,
        tail: Tail,
    ) -> Proc {
        let peer = Arc::new(Peer::instance(id, port, PeerStats::default()));
        Proc::new(gen, None, port, peer, exited, cancel, tail)
    }

    /// Poll until the instance answers its health path (2xx/3xx), or accepts on its
    /// port when there is none, within `startup_timeout`.
    fn watch_ready(&self, n: u32, gen: u64, peer: &Arc<Peer>, exited: watch::Receiver<bool>) {
        let tx = self.tx.clone();
        let pool = self.pool.clone();
        let peer = peer.clone();
        let health = self.app.health.clone();
        let limit = self.app.startup_timeout;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = String::from("no check yet");
            while start.elapsed() < limit {
                if *exited.borrow() {
                    return;
                }
                match check(&pool, &peer, health.path.as_deref(), health.timeout).await {
                    Ok(()) => {
                        let _ = tx.send(Msg::Ready {
                            slot: n,
                            gen,
                            took: start.elapsed(),
                        });
                        return;
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(READY_POLL).await;
            }
            if !*exited.borrow() {
                let why = format!("not ready within {limit:?} (last check: {last})");
                let _ = tx.send(Msg::NotReady { slot: n, gen, why });
            }
        });
    }

    /// Health checks of a ready instance until it stops or exits.
    fn watch_health(&self, n: u32, p: &Proc) {
        let tx = self.tx.clone();
        let pool = self.pool.clone();
        let peer = p.peer.clone();
        let health = self.app.health.clone();
        let gen = p.gen;
        let mut exited = p.exited.clone();
        let mut cancel = p.cancel.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = exited.changed() => return,
                    _ = cancel.changed() => return,
                }
                let ok = check(&pool, &peer, health.path.as_deref(), health.timeout).await;
                if tx.send(Msg::Health { slot: n, gen, ok }).is_err() {
                    return;
                }
            }
        });
    }

    async fn start_current(&mut self, n: u32) {
        let p = self.spawn_proc(n).await;
        if let Some(s) = self.slots.get_mut(&n) {
            s.backoff = false;
            s.reset_health();
            s.current = Some(p);
        }
    }

    fn ready(&mut self, n: u32, gen: u64, took: Duration) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        if slot.current.as_ref().is_some_and(|p| p.gen == gen) {
            slot.current.as_mut().expect("checked").ready = true;
            self.serve_current(n, took);
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (mut new, reason) = slot.replacement.take().expect("checked");
            new.ready = true;
            let new_pid = new.pid.unwrap_or(0);
            let old = slot.current.replace(new);
            slot.reset_health();
            let id = slot.id.clone();
            // Traffic moves to the new process before the old one drains.
            self.serve_current(n, took);
            let old_pid = old.as_ref().and_then(|o| o.pid).unwrap_or(0);
            if let Some(old) = old {
                self.retire(n, old);
            }
            self.events.emit(
                Event::new("instance_recycled", &self.app.name)
                    .instance(&id)
                    .pid(new_pid)
                    .field("old_pid", old_pid)
                    .field("reason", reason),
            );
            let msg = format!("{id} recycled: pid {old_pid} → pid {new_pid}");
            self.finish_recycle(n, Ok(msg));
        }
    }

    /// Slot `n`'s current process just became ready: say so, watch its health, and
    /// put it into the pool.
    fn serve_current(&self, n: u32, took: Duration) {
        let slot = &self.slots[&n];
        let p = slot.current.as_ref().expect("a ready process");
        self.events.emit(
            Event::new("instance_ready", &self.app.name)
                .instance(&slot.id)
                .pid(p.pid.unwrap_or(0))
                .field("port", p.port)
                .field("startup_ms", took.as_millis() as u64),
        );
        self.watch_health(n, p);
        self.publish();
    }

    fn not_ready(&mut self, n: u32, gen: u64, why: String) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        if let Some(p) = slot.current.as_mut().filter(|p| p.gen == gen) {
            // Killed now; the exit is handled (and backed off) like a crash.
            p.failed_start = Some(why);
            if let Some(pid) = p.pid {
                process::signal_group(pid, process::Signal::KILL);
            }
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (p, _) = slot.replacement.take().expect("checked");
            let id = slot.id.clone();
            self.events.emit(
                Event::new("recycle_failed", &self.app.name)
                    .instance(&id)
                    .pid(p.pid.unwrap_or(0))
                    .field(
                        "reason",
                        format!("the replacement {why}; the old instance keeps serving"),
                    ),
            );
            if let Some(pid) = p.pid {
                process::signal_group(pid, process::Signal::KILL);
            }
            slot.retiring.push(Proc {
                stopping: true,
                ..p
            });
            self.finish_recycle(
                n,
                Err(format!(
                    "{id}: the replacement {why}; the old instance keeps serving"
                )),
            );
        }
    }

    fn exited(&mut self, n: u32, gen: u64, how: Ended) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        let app = self.app.name.clone();
        // Stragglers of the process group (children of the app) go with it.
        let id = slot.id.clone();
        if let Some(i) = slot.retiring.iter().position(|p| p.gen == gen) {
            let p = slot.retiring.remove(i);
            finish_proc(&p, &self.ports);
            p.peer.mark_exited(ExitNotice {
                reason: format!("{id} (pid {}) was stopped", p.pid.unwrap_or(0)),
                self_inflicted: false,
                inflight: 0,
            });
            self.events.emit(
                Event::new("instance_stopped", &app)
                    .instance(&id)
                    .pid(p.pid.unwrap_or(0))
                    .field("uptime_s", round1(p.started.elapsed().as_secs_f64()))
                    .field("exit", describe_end(&how)),
            );
            self.drop_removed(n);
            return;
        }
        if slot.replacement.as_ref().is_some_and(|(p, _)| p.gen == gen) {
            let (p, _) = slot.replacement.take().expect("checked");
            finish_proc(&p, &self.ports);
            let why = exit_reason(&id, &p, &how);
            self.events.emit(
                Event::new("recycle_failed", &app)
                    .instance(&id)
                    .pid(p.pid.unwrap_or(0))
                    .field("reason", format!("the replacement exited before it was ready: {why}; the old instance keeps serving")),
            );
            self.finish_recycle(
                n,
                Err(format!(
                    "{id}: the replacement exited before it was ready: {why}"
                )),
            );
            return;
        }
        if slot.current.as_ref().is_none_or(|p| p.gen != gen) {
            return;
        }
        let p = slot.current.take().expect("checked");
        finish_proc(&p, &self.ports);
        let uptime = p.started.elapsed();
        let reason = exit_reason(&id, &p, &how);
        let self_inflicted = !matches!(&how, Ended::Status(s) if matches!(s.signal(), Some(libc::SIGKILL) | Some(libc::SIGTERM) | Some(libc::SIGINT)));
        p.peer.mark_exited(ExitNotice {
            reason: reason.clone(),
            self_inflicted,
            inflight: 0,
        });
        if p.stopping {
            self.events.emit(
                Event::new("instance_stopped", &app)
                    .instance(&id)
                    .pid(p.pid.unwrap_or(0))
                    .field("uptime_s", round1(uptime.as_secs_f64())),
            );
            self.publish();
            self.drop_removed(n);
            return;
        }
        let mut ev = Event::new("instance_exited", &app)
            .instance(&id)
            .pid(p.pid.unwrap_or(0))
            .field("uptime_s", round1(uptime.as_secs_f64()))
            .field("reason", reason.clone());
        match &how {
            Ended::Status(s) => {
                if let Some(c) = s.code() {
                    ev = ev.field("code", c);
                }
                if let Some(sig) = s.signal() {
                    ev = ev
                        .field("signal", sig)
                        .field("signal_name", process::signal_name(sig));
                }
            }
            Ended::SpawnFailed(e) => ev = ev.field("error", e.clone()),
        }
        let tail: Vec<String> = p
            .tail
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .cloned()
            .collect();
        if !tail.is_empty() {
            ev = ev.field("stderr", tail[tail.len().saturating_sub(5)..].to_vec());
        }
        self.events.emit(ev);
        slot.last_exit = Some(reason.clone());
        // A recycle in progress: its replacement takes over when ready.
        if let Some((r, why)) = slot.replacement.take() {
            slot.current = Some(r);
            self.publish();
            let _ = why;
            return;
        }
        if self.shutdown.is_some() || slot.removing {
            self.publish();
            self.drop_removed(n);
            return;
        }
        if uptime >= STABLE {
            slot.attempt = 0;
        }
        slot.fast_exits = if uptime < FAST_EXIT {
            slot.fast_exits + 1
        } else {
            0
        };
        slot.attempt += 1;
        slot.restarts += 1;
        slot.backoff = true;
        let delay = BACKOFF_MIN
            .saturating_mul(1 << (slot.attempt - 1).min(10))
            .min(BACKOFF_MAX);
        if slot.fast_exits == CRASH_LOOP_AFTER {
            self.events.emit(
                Event::new("crash_loop", &app)
                    .instance(&id)
                    .field("fast_exits", slot.fast_exits)
                    .field("reason", reason.clone()),
            );
        }
        self.events.emit(
            Event::new("instance_restarting", &app)
                .instance(&id)
                .field("attempt", slot.attempt)
                .field("delay_ms", delay.as_millis() as u64),
        );
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::RestartDue { slot: n });
        });
        self.publish();
    }

    async fn health(&mut self, n: u32, gen: u64, ok: Result<(), String>) {
        let h = self.app.health.clone();
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        let Some(p) = slot
            .current
            .as_ref()
            .filter(|p| p.gen == gen && p.ready && !p.stopping)
        else {
            return;
        };
        let peer = p.peer.clone();
        match ok {
            Ok(()) => {
                slot.health_fails = 0;
                slot.failing_since = None;
                slot.health_oks += 1;
                if !peer.is_healthy() && slot.health_oks >= h.healthy_after {
                    self.pool.set_health(&peer, true, "health check passed");
                }
            }
            Err(why) => {
                slot.health_oks = 0;
                slot.health_fails += 1;
                slot.failing_since.get_or_insert_with(Instant::now);
                if peer.is_healthy() && slot.health_fails >= h.unhealthy_after {
                    self.pool.set_health(&peer, false, &why);
                }
                // Still failing after three times as long: replace it.
                if slot.health_fails == h.unhealthy_after * 3 && slot.replacement.is_none() {
                    let id = slot.id.clone();
                    let (r, _w) = oneshot::channel();
                    self.recycle(&id, format!("unhealthy: {why}"), r).await;
                }
            }
        }
    }

    async fn command(&mut self, cmd: Command, reply: Reply) {
        match cmd {
            Command::Recycle { instance, reason } => self.recycle(&instance, reason, reply).await,
            Command::Restart { .. } => {
                if self.rolling.is_some() {
                    let _ = reply.send(Err(format!(
                        "{}: a restart is already rolling",
                        self.app.name
                    )));
                    return;
                }
                let order: Vec<u32> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| !s.removing && s.current.is_some())
                    .map(|(n, _)| *n)
                    .collect();
                if order.is_empty() {
                    let _ = reply.send(Err(format!(
                        "{}: no running instance to restart",
                        self.app.name
                    )));
                    return;
                }
                let total = order.len();
                self.rolling = Some((order, reply, total));
                self.roll_on(Ok(String::new())).await;
            }
            Command::Scale { instances, .. } => {
                if self.app.autoscale.is_some() {
                    self.manual_scale = true;
                }
                let _ = reply.send(self.scale(instances, "requested").await);
            }
            Command::Configure { .. } | Command::Remove { .. } => {
                let _ = reply.send(Err("handled by the supervisor, not an app".into()));
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

    /// The next step of a rolling restart: recycle the next instance, or report.
    async fn roll_on(&mut self, outcome: Result<String, String>) {
        let Some((mut order, reply, total)) = self.rolling.take() else {
            return;
        };
        if let Err(e) = outcome {
            let _ = reply.send(Err(format!("restart of {} stopped: {e}", self.app.name)));
            return;
        }
        if order.is_empty() {
            let _ = reply.send(Ok(format!(
                "{}: {total} instances restarted",
                self.app.name
            )));
            return;
        }
        let n = order.remove(0);
        let id = format!("{}#{n}", self.app.name);
        self.rolling = Some((order, reply, total));
        let (r, w) = oneshot::channel();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let outcome = w.await.unwrap_or_else(|_| Err("recycle abandoned".into()));
            let _ = tx.send(Msg::RecycleDone { outcome });
        });
        self.recycle(&id, "restart".into(), r).await;
    }

    /// Overlapping recycle: start the replacement; when it is ready, move traffic,
    /// then drain and stop the old process (see `ready`).
    async fn recycle(&mut self, instance: &str, reason: String, reply: Reply) {
        let n = instance
            .rsplit_once('#')
            .and_then(|(_, k)| k.parse::<u32>().ok())
            .filter(|n| self.slots.get(n).is_some_and(|s| !s.removing));
        let Some(n) = n else {
            let _ = reply.send(Err(format!("unknown instance {instance:?}")));
            return;
        };
        let slot = &self.slots[&n];
        if slot.replacement.is_some() {
            self.recycle_waiters.entry(n).or_default().push(reply);
            return;
        }
        if !slot.current.as_ref().is_some_and(|p| p.ready) {
            let state = slot_state(slot);
            let _ = reply.send(Err(format!(
                "{instance} is {state}, not ready: nothing to recycle"
            )));
            return;
        }
        self.events.emit(
            Event::new("instance_recycling", &self.app.name)
                .instance(instance)
                .pid(slot.current.as_ref().and_then(|p| p.pid).unwrap_or(0))
                .field("reason", reason.clone()),
        );
        let p = self.spawn_proc(n).await;
        let slot = self.slots.get_mut(&n).expect("checked");
        slot.replacement = Some((p, reason));
        slot.restarts += 1;
        self.recycle_waiters.entry(n).or_default().push(reply);
    }

    fn finish_recycle(&mut self, n: u32, outcome: Result<String, String>) {
        for w in self.recycle_waiters.remove(&n).unwrap_or_default() {
            let _ = w.send(outcome.clone());
        }
    }

    async fn scale(&mut self, instances: u32, reason: &str) -> Result<String, String> {
        if instances == 0 {
            return Err("scale: at least 1 instance".into());
        }
        let from = self.target;
        self.target = instances;
        let active: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.removing)
            .map(|(n, _)| *n)
            .collect();
        if (active.len() as u32) < instances {
            let mut n = 1;
            let mut added = 0;
            while (active.len() as u32) + added < instances {
                if !self.slots.contains_key(&n) {
                    self.slots.insert(n, self.new_slot(n));
                    self.start_current(n).await;
                    added += 1;
                }
                n += 1;
            }
        } else {
            for n in active.iter().rev().take(active.len() - instances as usize) {
                self.slots.get_mut(n).expect("active").removing = true;
                self.stop_slot(*n);
                self.finish_recycle(*n, Err("the instance was scaled away".into()));
                self.drop_removed(*n);
            }
            self.publish();
        }
        self.last_scale = Instant::now();
        self.events.emit(
            Event::new("scaled", &self.app.name)
                .field("from", from)
                .field("to", instances)
                .field("reason", reason),
        );
        Ok(format!(
            "{}: scaled from {from} to {instances} instances",
            self.app.name
        ))
    }

    /// Apply a reloaded config: a changed command, environment or health check rolls
    /// every instance (overlapping); a changed count scales; rules and limits apply
    /// from now on. A manual scale stops overriding autoscale.
    async fn update(&mut self, app: App, pool: Arc<Pool>) -> Result<String, String> {
        let old = std::mem::replace(&mut self.app, app);
        if !Arc::ptr_eq(&pool, &self.pool) {
            self.previous_pool = Some(std::mem::replace(&mut self.pool, pool));
            self.publish();
        }
        self.manual_scale = false;
        let new = self.app.clone();
        let roll = old.command != new.command
            || old.cwd != new.cwd
            || old.env != new.env
            || old.health != new.health
            || old.startup_timeout != new.startup_timeout;
        let mut did = Vec::new();
        if new.autoscale.is_none() && old.instances != new.instances {
            self.scale(new.instances, "config reloaded").await?;
            did.push(format!("scaled to {}", new.instances));
        } else if let Some(a) = &new.autoscale {
            let t = self.target.clamp(a.min, a.max);
            if t != self.target {
                self.scale(t, "config reloaded: autoscale bounds").await?;
                did.push(format!("scaled to {t}"));
            }
        }
        if roll {
            let (r, w) = oneshot::channel();
            self.command(
                Command::Restart {
                    app: self.app.name.clone(),
                },
                r,
            )
            .await;
            let events = self.events.clone();
            let name = self.app.name.clone();
            tokio::spawn(async move {
                if let Ok(Err(e)) = w.await {
                    events.emit(Event::new("reload_restart_failed", &name).field("reason", e));
                }
            });
            did.push("rolling restart with the new command".into());
        }
        if did.is_empty() {
            did.push("settings updated".into());
        }
        Ok(format!("{}: {}", self.app.name, did.join(", ")))
    }

    /// Every [`TICK`]: measure every instance's process tree, then evaluate AutoHeal
    /// rules and autoscale.
    async fn tick(&mut self) {
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

    /// Evaluate every rule on every ready instance old enough (`min_uptime`); fire
    /// the first that holds, within the guard rails: one recycle at a time per app,
    /// `max_recycles` per window, each rule once per process.
    fn autoheal(&mut self) {
        let Some(ah) = self.app.autoheal.clone() else {
            return;
        };
        let now = Instant::now();
        let recycling = self.healing || self.slots.values().any(|s| s.replacement.is_some());
        let mut firing: Option<(u32, autoheal::Firing)> = None;
        'slots: for (n, slot) in &self.slots {
            let Some(p) = slot.current.as_ref().filter(|p| p.ready && !p.stopping) else {
                continue;
            };
            if p.started.elapsed() < ah.min_uptime || slot.replacement.is_some() {
                continue;
            }
            for idx in 0..ah.rules.len() {
                if self.fired.contains(&(p.gen, idx)) {
                    continue;
                }
                let held = self.held.entry((p.gen, idx)).or_default();
                if let Some(f) = autoheal::check(
                    &ah,
                    idx,
                    &p.peer,
                    p.sample.as_ref(),
                    slot.failing_since,
                    held,
                    now,
                ) {
                    if recycling && ah.rules[idx].actions.contains(&Action::Recycle) {
                        continue; // one recycle at a time: evaluated again next tick
                    }
                    firing = Some((*n, f));
                    break 'slots;
                }
            }
        }
        let Some((n, f)) = firing else { return };
        let slot = &self.slots[&n];
        let p = slot.current.as_ref().expect("chosen above");
        let (id, gen, pid, peer) = (slot.id.clone(), p.gen, p.pid.unwrap_or(0), p.peer.clone());
        let actions = ah.rules[f.rule].actions.clone();
        if actions.contains(&Action::Recycle) {
            let (limit, within) = ah.max_recycles;
            while self
                .recycles
                .front()
                .is_some_and(|t| now.duration_since(*t) > within)
            {
                self.recycles.pop_front();
            }
            if self.recycles.len() >= limit as usize {
                if self.suppressed.insert((gen, f.rule)) {
                    let why = format!("max_recycles reached: {limit} within {within:?}");
                    self.events.emit(
                        self.firing_event("autoheal_suppressed", &id, pid, &f)
                            .field("reason", why),
                    );
                }
                return;
            }
            self.recycles.push_back(now);
            self.healing = true;
        }
        self.fired.insert((gen, f.rule));
        autoheal::reset(&ah, f.rule, &peer);
        let names: Vec<String> = actions.iter().map(action_name).collect();
        self.events.emit(
            self.firing_event("autoheal_fired", &id, pid, &f)
                .field("actions", names),
        );
        let reason = format!(
            "autoheal rule {}: {} (measured {}, threshold {})",
            f.rule, f.trigger, f.measured, f.threshold
        );
        self.run_actions(id, pid, actions, reason);
    }

    /// An event about a rule firing on instance `id`: the rule, its trigger, the
    /// measured value and the threshold.
    fn firing_event(&self, kind: &'static str, id: &str, pid: u32, f: &autoheal::Firing) -> Event {
        Event::new(kind, &self.app.name)
            .instance(id)
            .pid(pid)
            .field("rule", f.rule)
            .field("trigger", f.trigger.clone())
            .field("measured", f.measured.clone())
            .field("threshold", f.threshold.clone())
    }

    /// Run a firing's actions in order, each reported by an `autoheal_action` event.
    fn run_actions(&self, id: String, pid: u32, actions: Vec<Action>, reason: String) {
        let (tx, events, app, dir) = (
            self.tx.clone(),
            self.events.clone(),
            self.app.name.clone(),
            self.diagnostics_dir.clone(),
        );
        tokio::spawn(async move {
            for action in actions {
                let ev = Event::new("autoheal_action", &app)
                    .instance(&id)
                    .pid(pid)
                    .field("action", action_name(&action));
                let ev = match action {
                    Action::Log => ev.field("outcome", "logged"),
                    Action::Diagnose => {
                        let (d, i, r) = (dir.clone(), id.clone(), reason.clone());
                        let captured = tokio::task::spawn_blocking(move || {
                            crate::diagnose::capture::capture_process(&d, &i, pid, &r)
                        })
                        .await;
                        match captured {
                            Ok(Ok(path)) => ev
                                .field("outcome", "captured")
                                .field("path", path.display().to_string()),
                            Ok(Err(e)) => ev.field("outcome", format!("capture failed: {e}")),
                            Err(e) => ev.field("outcome", format!("capture failed: {e}")),
                        }
                    }
                    Action::Recycle => {
                        let (r, w) = oneshot::channel();
                        let cmd = Command::Recycle {
                            instance: id.clone(),
                            reason: reason.clone(),
                        };
                        if tx.send(Msg::Command(cmd, r)).is_err() {
                            return;
                        }
                        match w.await {
                            Ok(Ok(m)) => ev.field("outcome", m),
                            Ok(Err(e)) => ev.field("outcome", format!("recycle failed: {e}")),
                            Err(_) => ev.field("outcome", "recycle abandoned"),
                        }
                    }
                    Action::Command(argv) => {
                        let argv: Vec<String> = argv
                            .iter()
                            .map(|a| {
                                a.replace("{pid}", &pid.to_string())
                                    .replace("{instance}", &id)
                            })
                            .collect();
                        ev.field("outcome", run_operator_command(&argv).await)
                    }
                };
                events.emit(ev);
            }
            let _ = tx.send(Msg::AutohealDone);
        });
    }

    /// Between `min` and `max`: enough instances for the in-flight requests and the
    /// queue at `target_inflight` each (and for CPU when `target_cpu` is set). Out at
    /// once; in only after `cooldown` without a need for the current count.
    async fn autoscale(&mut self) {
        let Some(a) = self.app.autoscale.clone() else {
            return;
        };
        if self.manual_scale || self.rolling.is_some() {
            return;
        }
        let procs: Vec<&Proc> = self
            .slots
            .values()
            .filter(|s| !s.removing)
            .filter_map(|s| s.current.as_ref())
            .collect();
        let inflight: u32 = procs.iter().map(|p| p.peer.outstanding()).sum();
        let queued = self.pool.queued() as u32;
        let per = a.target_inflight.max(1);
        let mut desired = (inflight + queued).div_ceil(per);
        if let Some(cpu) = a.target_cpu {
            let total: f64 = procs
                .iter()
                .filter_map(|p| p.sample.map(|s| s.cpu_pct))
                .sum();
            desired = desired.max((total / cpu.max(1.0)).ceil() as u32);
        }
        let desired = desired.clamp(a.min, a.max);
        let now = Instant::now();
        if desired >= self.target {
            self.last_busy = now;
        }
        let why =
            format!("autoscale: {inflight} in flight + {queued} queued, target {per} per instance");
        if desired > self.target
            || (desired < self.target
                && now.duration_since(self.last_busy) >= a.cooldown
                && now.duration_since(self.last_scale) >= a.cooldown)
        {
            let _ = self.scale(desired, &why).await;
        }
    }

    /// Retire every process of slot `n` (current and replacement); no restart follows.
    fn stop_slot(&mut self, n: u32) {
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        slot.backoff = false;
        let procs: Vec<Proc> = slot
            .current
            .take()
            .into_iter()
            .chain(slot.replacement.take().map(|(p, _)| p))
            .collect();
        for p in procs {
            self.retire(n, p);
        }
    }

    /// Take `p` out of rotation, let its in-flight requests finish (up to
    /// `shutdown_grace`), then SIGTERM its group, then SIGKILL.
    fn retire(&mut self, n: u32, mut p: Proc) {
        p.stopping = true;
        let _ = p.cancel.send(true);
        p.peer.set_draining(true);
        let Some(slot) = self.slots.get_mut(&n) else {
            return;
        };
        self.events.emit(
            Event::new("instance_draining", &self.app.name)
                .instance(&slot.id)
                .pid(p.pid.unwrap_or(0))
                .field("inflight", p.peer.outstanding()),
        );
        let grace = self.app.shutdown_grace;
        let (peer, pid, mut exited) = (p.peer.clone(), p.pid, p.exited.clone());
        slot.retiring.push(p);
        tokio::spawn(async move {
            let Some(pid) = pid else { return };
            let deadline = tokio::time::Instant::now() + grace;
            while peer.outstanding() > 0
                && tokio::time::Instant::now() < deadline
                && !*exited.borrow()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if *exited.borrow() {
                return;
            }
            process::signal_group(pid, process::Signal::TERM);
            let wait = TERM_WAIT.min(grace.max(Duration::from_secs(1)));
            let _ = tokio::time::timeout(wait, exited.wait_for(|e| *e)).await;
            if !*exited.borrow() {
                process::signal_group(pid, process::Signal::KILL);
            }
        });
        self.publish();
    }

    fn drop_removed(&mut self, n: u32) {
        if let Some(s) = self.slots.get(&n) {
            if s.removing && s.current.is_none() && s.replacement.is_none() && s.retiring.is_empty()
            {
                self.slots.remove(&n);
            }
        }
    }

    fn all_stopped(&self) -> bool {
        self.slots
            .values()
            .all(|s| s.current.is_none() && s.replacement.is_none() && s.retiring.is_empty())
    }

    /// Put the ready instances into the pool; say why the app cannot serve when none is.
    fn publish(&self) {
        let peers: Vec<Arc<Peer>> = self
            .slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .filter(|p| p.ready && !p.stopping)
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

    /// Update what status readers see.
    fn refresh(&self) {
        let slots: Vec<SlotView> = self
            .slots
            .values()
            .map(|s| {
                let p = s.current.as_ref();
                SlotView {
                    id: s.id.clone(),
                    pid: p.and_then(|p| p.pid),
                    port: p.map(|p| p.port).unwrap_or(0),
                    state: slot_state(s),
                    started: p.map(|p| p.started),
                    restarts: s.restarts,
                    last_exit: s.last_exit.clone(),
                    peer: p.map(|p| p.peer.clone()),
                    sample: p.and_then(|p| p.sample),
                }
            })
            .collect();
        let ready = slots.iter().filter(|s| s.state == "ready").count();
        let looping = self
            .slots
            .values()
            .any(|s| s.fast_exits >= CRASH_LOOP_AFTER);
        let state = if self.shutdown.is_some() {
            "stopping"
        } else if ready == 0 && looping {
            "crash_loop"
        } else if ready == 0 {
            "starting"
        } else {
            "running"
        };
        let reason = (state == "crash_loop").then(|| {
            self.slots
                .values()
                .find(|s| s.fast_exits >= CRASH_LOOP_AFTER)
                .and_then(|s| s.last_exit.clone())
                .unwrap_or_default()
        });
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        *v = AppView {
            name: self.app.name.clone(),
            state,
            target: self.target,
            reason,
            slots,
        };
    }
}

fn slot_state(s: &Slot) -> &'static str {
    match &s.current {
        Some(p) if p.stopping => "draining",
        Some(p) if p.ready && !p.peer.is_healthy() => "unhealthy",
        Some(p) if p.ready => "ready",
        Some(_) => "starting",
        None if s.backoff && s.fast_exits >= CRASH_LOOP_AFTER => "crash_loop",
        None if s.backoff => "backoff",
        None if s.last_exit.is_some() => "crashed",
        None => "stopped",
    }
}

/// One readiness or health check: GET the path (2xx/3xx), or connect when there is none.
async fn check(
    pool: &Pool,
    peer: &Peer,
    path: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let probe = async {
        match path {
            Some(path) => match pool
                .connector
                .probe_get(&peer.id, &peer.target, false, path)
                .await
            {
                Ok(s) if (200..400).contains(&s) => Ok(()),
                Ok(s) => Err(format!("GET {path} answered {s}")),
                Err(e) => Err(format!("GET {path}: {}", e.context)),
            },
            None => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], peer.target.port()));
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("connect {addr}: {e}"))
            }
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// A process is gone: kill what is left of its group, free its port, stop its checks.
fn finish_proc(p: &Proc, ports: &Ports) {
    if let Some(pid) = p.pid {
        process::signal_group(pid, process::Signal::KILL);
    }
    let _ = p.cancel.send(true);
    if p.port != 0 {
        ports.release(p.port);
    }
}

fn describe_end(how: &Ended) -> String {
    match how {
        Ended::Status(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(sig)) => format!("killed by signal {sig} ({})", process::signal_name(sig)),
            _ => "ended".into(),
        },
        Ended::SpawnFailed(e) => e.clone(),
    }
}

/// `web#2 (pid 4242) exited with code 1 after 0.3s: ModuleNotFoundError: ...`.
fn exit_reason(id: &str, p: &Proc, how: &Ended) -> String {
    let mut s = format!(
        "{id} (pid {}) {} after {:.1}s",
        p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
        describe_end(how),
        p.started.elapsed().as_secs_f64()
    );
    if let Some(why) = &p.failed_start {
        s.push_str(&format!(" ({why})"));
    }
    let tail = p.tail.lock().unwrap_or_else(|x| x.into_inner());
    if let Some(last) = tail.iter().rev().find(|l| !l.trim().is_empty()) {
        s.push_str(": ");
        s.push_str(last.trim());
    }
    s
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn action_name(a: &Action) -> String {
    match a {
        Action::Recycle => "recycle".into(),
        Action::Log => "log".into(),
        Action::Diagnose => "diagnose".into(),
        Action::Command(argv) => format!("command {}", argv.join(" ")),
    }
}

/// Run an operator's command (an AutoHeal action) for at most a minute.
async fn run_operator_command(argv: &[String]) -> String {
    let Some((prog, args)) = argv.split_first() else {
        return "empty command".into();
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(60), child).await {
        Ok(Ok(s)) => format!("exited with {s}"),
        Ok(Err(e)) => format!("could not run {prog:?}: {e}"),
        Err(_) => "killed after 60s".into(),
    }
}
