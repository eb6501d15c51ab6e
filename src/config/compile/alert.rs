//! `[[alert]]`: a condition on an app's measurements, its `for` duration, and where
//! firing and resolved notifications go.

use super::*;

/// The conditions an alert may name (one per rule).
const CONDITIONS: [&str; 5] = [
    "error_rate_above",
    "p95_above",
    "memory_above",
    "crash_loop",
    "incident",
];

pub(super) fn alert(cx: &mut Ctx, mut t: TableReader) -> Option<Alert> {
    let name = t.require(cx, "name").and_then(|f| f.text(cx));
    let app = t.get(cx, "app", Field::text);
    let when = t.require(cx, "when").and_then(|f| when(cx, &f));
    let webhook = t.get(cx, "webhook", |f, cx| {
        let url = f.text(cx)?;
        match url.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            Ok(u) if u.scheme_str() == Some("https") => {
                f.error(cx, format!("{url:?}: https webhooks are not supported yet; use http:// (e.g. to a local relay)"));
                let _ = u;
                None
            }
            _ => {
                f.error(cx, format!("expected an http:// URL, found {url:?}"));
                None
            }
        }
    });
    let command = t.get(cx, "command", |f, cx| {
        let argv = f.strings(cx)?;
        if argv.is_empty() {
            f.error(
                cx,
                "must name a program: [\"/path/to/program\", \"{alert}\", \"{state}\"]",
            );
            return None;
        }
        Some(argv)
    });
    let (path, span) = (t.path.clone(), t.span.clone());
    t.finish(cx);
    if webhook.is_none() && command.is_none() && name.is_some() {
        cx.warning(
            &path,
            &span,
            "no webhook and no command: the alert is only an event and a metric",
        );
    }
    let (condition, for_) = when?;
    Some(Alert {
        name: name?,
        app,
        condition,
        for_,
        webhook,
        command,
    })
}

fn when(cx: &mut Ctx, f: &Field) -> Option<(Condition, Duration)> {
    let mut t = f.table(cx)?;
    let for_ = t.get(cx, "for", Field::duration).unwrap_or(Duration::ZERO);
    let mut found: Vec<(&str, Field)> = Vec::new();
    for key in CONDITIONS {
        if let Some(field) = t.take(key) {
            found.push((key, field));
        }
    }
    let has_unknown = t.entries().len() > found.len();
    let (path, span) = (t.path.clone(), t.span.clone());
    t.finish(cx);
    let (key, field) = match found.as_slice() {
        [] => {
            if !has_unknown {
                cx.error(
                    &path,
                    &span,
                    format!("names no condition; use one of: {}", CONDITIONS.join(", ")),
                );
            }
            return None;
        }
        [one] => one,
        [(first, _), rest @ ..] => {
            for (key, field) in rest {
                field.error(cx, format!("an alert has one condition, and this one already has {first:?}; put {key:?} in its own [[alert]]"));
            }
            return None;
        }
    };
    let condition = match *key {
        "error_rate_above" => {
            let text = field.text(cx)?;
            let share = match text
                .trim()
                .strip_suffix('%')
                .map(|n| n.trim().parse::<f64>())
            {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => p / 100.0,
                _ => {
                    field.error(cx, format!("expected a percentage above 0% and at most 100%, like \"5%\", found {text:?}"));
                    return None;
                }
            };
            Condition::ErrorRateAbove(share)
        }
        "p95_above" => Condition::P95Above(field.positive_duration(cx)?),
        "memory_above" => Condition::MemoryAbove(field.size(cx)?),
        "crash_loop" | "incident" => {
            if field.bool(cx)? {
                if *key == "crash_loop" {
                    Condition::CrashLoop
                } else {
                    Condition::Incident
                }
            } else {
                field.error(
                    cx,
                    "only `true` means something here; remove the alert to turn it off",
                );
                return None;
            }
        }
        _ => unreachable!("CONDITIONS lists every key"),
    };
    Some((condition, for_))
}
