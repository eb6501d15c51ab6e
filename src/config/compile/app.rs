//! `[[app]]`: hosted apps, their command, environment, autoscale and AutoHeal rules.

use super::*;

// ---------------------------------------------------------------- [[app]]

pub(super) fn app(
    cx: &mut Ctx,
    mut t: TableReader,
    base: &Path,
    claims: &mut Claims,
) -> Option<App> {
    let name = name(cx, &mut t, "app", claims);
    let owner = match &name {
        Some(name) => format!("app {name:?}"),
        None => t.path.clone(),
    };
    let command = t.require(cx, "command").and_then(|f| argv(cx, &f));
    let cwd = t
        .get(cx, "cwd", |f, cx| path_field(cx, f, base))
        .unwrap_or_else(|| resolve(base, "."));
    let env = t.get(cx, "env", |f, cx| env(cx, f)).unwrap_or_default();
    let instances = t.get(cx, "instances", |f, cx| f.u32(cx, 1)).unwrap_or(1);
    let routes = routes(cx, &mut t, &owner, claims);
    let max_concurrency = t
        .get(cx, "max_concurrency", |f, cx| f.u32(cx, 0))
        .unwrap_or(64);
    let protocol = t
        .get(cx, "protocol", |f, cx| protocol(cx, f, false))
        .unwrap_or_default();
    let queue = t.get(cx, "queue", |f, cx| queue(cx, f)).unwrap_or_default();
    let health = t
        .get(cx, "health", |f, cx| health(cx, f, HealthOf::App))
        .unwrap_or_else(Health::app_default);
    let startup_timeout = t
        .get(cx, "startup_timeout", Field::positive_duration)
        .unwrap_or(Duration::from_secs(60));
    let shutdown_grace = t
        .get(cx, "shutdown_grace", Field::duration)
        .unwrap_or(Duration::from_secs(30));
    let retry = t.get(cx, "retry", |f, cx| retry(cx, f)).unwrap_or_default();
    let autoheal = t.get(cx, "autoheal", |f, cx| autoheal(cx, f));
    let autoscale = t.get(cx, "autoscale", |f, cx| autoscale(cx, f));
    let floor = instances.max(autoscale.as_ref().map_or(1, |a: &Autoscale| a.max));
    let max_instances = match t.take("max_instances") {
        Some(f) => f.u32(cx, 1).inspect(|&n| {
            if n < floor {
                f.error(
                    cx,
                    format!("must be at least {floor} (instances and autoscale.max), found {n}"),
                );
            }
        }),
        None => None,
    }
    .unwrap_or(DEFAULT_MAX_INSTANCES.max(floor));
    t.finish(cx);
    Some(App {
        name: name?,
        command: command?,
        cwd,
        env,
        instances,
        max_instances,
        routes: routes?,
        max_concurrency,
        protocol,
        queue,
        health,
        startup_timeout,
        shutdown_grace,
        retry,
        autoheal,
        autoscale,
    })
}

/// `max_instances` when not set (and not below `instances` or `autoscale.max`).
pub(super) const DEFAULT_MAX_INSTANCES: u32 = 64;

/// A command line: a non-empty array of strings whose first is not empty.
pub(super) fn argv(cx: &mut Ctx, f: &Field) -> Option<Vec<String>> {
    let argv = f.strings(cx)?;
    match argv.first() {
        None => {
            f.error(
                cx,
                r#"must name a program, e.g. ["python3", "app.py", "--port", "{port}"]"#,
            );
            None
        }
        Some(program) if program.is_empty() => {
            f.error(cx, "the program (first element) must not be empty");
            None
        }
        Some(_) => Some(argv),
    }
}

/// `env = { NAME = "value" }`.
pub(super) fn env(cx: &mut Ctx, f: &Field) -> Option<Vec<(String, String)>> {
    let t = f.table(cx)?;
    let mut env = Vec::new();
    for (key, value) in t.take_all() {
        if key.is_empty() || key.contains(['=', '\0']) {
            value.error(
                cx,
                format!("{key:?} cannot be an environment variable name"),
            );
            continue;
        }
        let Some(v) = value.str(cx) else { continue };
        if key == "PORT" {
            value.warning(
                cx,
                "PORT is set per instance to the port it listens on; this value is ignored",
            );
            continue;
        }
        env.push((key.to_string(), v.to_string()));
    }
    Some(env)
}

pub(super) fn autoscale(cx: &mut Ctx, f: &Field) -> Option<Autoscale> {
    let mut t = f.table(cx)?;
    let min_field = t.take("min");
    let min = min_field.as_ref().map_or(Some(1), |f| f.u32(cx, 1));
    let max = t.require(cx, "max").and_then(|f| f.u32(cx, 1));
    let target_inflight = t
        .get(cx, "target_inflight", |f, cx| f.u32(cx, 1))
        .unwrap_or(16);
    let target_cpu = t.get(cx, "target_cpu", |f, cx| f.number(cx, 1.0, 10_000.0));
    let cooldown = t
        .get(cx, "cooldown", Field::duration)
        .unwrap_or(Duration::from_secs(30));
    t.finish(cx);
    let (min, max) = (min?, max?);
    if min > max {
        let at = min_field.unwrap_or_else(|| f.clone());
        at.error(cx, format!("min ({min}) is greater than max ({max})"));
        return None;
    }
    Some(Autoscale {
        min,
        max,
        target_inflight,
        target_cpu,
        cooldown,
    })
}

// ---------------------------------------------------------------- [app.autoheal]

/// The trigger keys of a rule's `when`.
pub(super) const TRIGGERS: [&str; 6] = [
    "memory_above",
    "cpu_above",
    "requests",
    "slow_requests",
    "status",
    "unhealthy",
];

pub(super) fn autoheal(cx: &mut Ctx, f: &Field) -> Option<Autoheal> {
    let mut t = f.table(cx)?;
    let mut a = Autoheal::default();
    set(&mut a.min_uptime, t.get(cx, "min_uptime", Field::duration));
    if let Some(mut mr) = t.take("max_recycles").and_then(|f| f.table(cx)) {
        set(
            &mut a.max_recycles.0,
            mr.get(cx, "count", |f, cx| f.u32(cx, 1)),
        );
        set(
            &mut a.max_recycles.1,
            mr.get(cx, "within", Field::positive_duration),
        );
        mr.finish(cx);
    }
    let mut all_good = true;
    let rules = t
        .take("rule")
        .and_then(|f| f.tables(cx))
        .unwrap_or_default();
    for mut r in rules {
        let when = r.require(cx, "when").and_then(|f| trigger(cx, &f));
        let actions = match r.take("action") {
            Some(f) => actions(cx, &f),
            None => Some(vec![Action::Recycle]),
        };
        r.finish(cx);
        match (when, actions) {
            (Some(when), Some(actions)) => a.rules.push(AutohealRule { when, actions }),
            _ => all_good = false,
        }
    }
    t.finish(cx);
    all_good.then_some(a)
}

/// `when = { <one trigger> = ... }`.
pub(super) fn trigger(cx: &mut Ctx, f: &Field) -> Option<Trigger> {
    let mut t = f.table(cx)?;
    // Take "memory_above", ... one by one (the keys are 'static for the allowed list).
    let mut found: Vec<(&str, Field)> = Vec::new();
    for key in TRIGGERS {
        if let Some(field) = t.take(key) {
            found.push((key, field));
        }
    }
    let has_unknown = t.entries().len() > found.len();
    let (table_path, table_span) = (t.path.clone(), t.span.clone());
    t.finish(cx);
    match found.as_slice() {
        [] => {
            if !has_unknown {
                cx.error(
                    &table_path,
                    &table_span,
                    format!("names no trigger; use one of: {}", TRIGGERS.join(", ")),
                );
            }
            None
        }
        [(key, field)] => trigger_of(cx, key, field),
        [(first, _), rest @ ..] => {
            for (key, field) in rest {
                field.error(
                    cx,
                    format!("a rule has one trigger, and this one already has {first:?}; put {key:?} in its own [[app.autoheal.rule]]"),
                );
            }
            None
        }
    }
}

pub(super) fn trigger_of(cx: &mut Ctx, key: &str, f: &Field) -> Option<Trigger> {
    if key == "memory_above" {
        let bytes = f.size(cx)?;
        if bytes == 0 {
            f.error(cx, "must be more than 0 bytes");
            return None;
        }
        return Some(Trigger::MemoryAbove(bytes));
    }
    let mut t = f.table(cx)?;
    let trigger = match key {
        "cpu_above" => {
            let percent = t
                .require(cx, "percent")
                .and_then(|f| f.number(cx, 1.0, 10_000.0));
            let for_ = t
                .get(cx, "for", Field::positive_duration)
                .unwrap_or(Duration::from_secs(60));
            percent.map(|percent| Trigger::CpuAbove { percent, for_ })
        }
        "requests" => {
            let count = t.require(cx, "count").and_then(|f| f.u64(cx, 1));
            count.map(|count| Trigger::Requests { count })
        }
        "slow_requests" => {
            let count = t.require(cx, "count").and_then(|f| f.u32(cx, 1));
            let slower_than = t
                .require(cx, "slower_than")
                .and_then(|f| f.positive_duration(cx));
            let within = t
                .require(cx, "within")
                .and_then(|f| f.positive_duration(cx));
            let path = t.get(cx, "path", url_path);
            match (count, slower_than, within) {
                (Some(count), Some(slower_than), Some(within)) => Some(Trigger::SlowRequests {
                    count,
                    slower_than,
                    within,
                    path,
                }),
                _ => None,
            }
        }
        "status" => {
            let codes = t.require(cx, "codes").and_then(|f| status_codes(cx, &f));
            let count = t.require(cx, "count").and_then(|f| f.u32(cx, 1));
            let within = t
                .require(cx, "within")
                .and_then(|f| f.positive_duration(cx));
            let path = t.get(cx, "path", url_path);
            match (codes, count, within) {
                (Some(codes), Some(count), Some(within)) => Some(Trigger::Status {
                    codes,
                    count,
                    within,
                    path,
                }),
                _ => None,
            }
        }
        _ => {
            let for_ = t.require(cx, "for").and_then(|f| f.positive_duration(cx));
            for_.map(|for_| Trigger::Unhealthy { for_ })
        }
    };
    t.finish(cx);
    trigger
}

/// `codes = "500-599"`, `"502"` or `502`: an inclusive range within 100..=599.
pub(super) fn status_codes(cx: &mut Ctx, f: &Field) -> Option<(u16, u16)> {
    let expected = r#"expected status codes like "500-599" or "502", within 100 to 599"#;
    let text = match f.node {
        Node::Value(Value::Integer(i)) => i.value().to_string(),
        Node::Value(Value::String(s)) => s.value().clone(),
        _ => {
            f.mismatch(cx, r#"status codes like "500-599" or "502""#);
            return None;
        }
    };
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match (code(lo), code(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => {
            f.error(cx, format!("{expected}, found {text:?}"));
            None
        }
    }
}

/// `action`: one action or an array of them.
pub(super) fn actions(cx: &mut Ctx, f: &Field) -> Option<Vec<Action>> {
    let Node::Value(Value::Array(_)) = f.node else {
        return action(cx, f).map(|a| vec![a]);
    };
    let elements = f.array(cx, "an array of actions")?;
    if elements.is_empty() {
        f.error(
            cx,
            r#"must name at least one action: recycle, log, diagnose or { command = [...] }"#,
        );
        return None;
    }
    let actions: Vec<_> = elements.iter().map(|e| action(cx, e)).collect();
    actions.into_iter().collect()
}

/// `"recycle"`, `"log"`, `"diagnose"` or `{ command = [...] }`.
pub(super) fn action(cx: &mut Ctx, f: &Field) -> Option<Action> {
    let allowed = r#"recycle, log, diagnose or { command = ["...", "{pid}"] }"#;
    match f.node {
        Node::Value(Value::String(s)) => match s.value().as_str() {
            "recycle" => Some(Action::Recycle),
            "log" => Some(Action::Log),
            "diagnose" => Some(Action::Diagnose),
            "command" => {
                f.error(cx, r#""command" needs its argv: action = { command = ["/path/to/script", "{pid}"] }"#);
                None
            }
            other => {
                f.error(cx, format!("unknown action {other:?}; allowed: {allowed}"));
                None
            }
        },
        Node::Value(Value::InlineTable(_)) | Node::Table(_) => {
            let mut t = f.table(cx)?;
            let command = t.require(cx, "command").and_then(|f| argv(cx, &f));
            t.finish(cx);
            command.map(Action::Command)
        }
        _ => {
            f.mismatch(cx, &format!("an action ({allowed})"));
            None
        }
    }
}
