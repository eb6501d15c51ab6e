//! The report of a bundle: `report.json` (SPEC §5) and `report.html`, one
//! self-contained page (uPlot, styles and script inlined; no network, opens from
//! disk). Every value from the bundle goes into the page escaped ([`Esc`]) or as JSON
//! inside a `<script type="application/json">` whose `<` are `\u003c`; the script
//! writes only text (`textContent`), never markup.

use super::analyze::{Finding, Report};
use super::bundle::Bundle;
use crate::proxy::pages::Esc;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

const UPLOT_JS: &str = include_str!("../admin/assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../admin/assets/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../admin/assets/uplot/LICENSE");

/// Write `report.json` and `report.html` into `dir`.
pub fn write(dir: &Path, b: &Bundle, r: &Report) -> io::Result<()> {
    let json = serde_json::to_string_pretty(&r.to_json()).unwrap_or_default();
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.html"), html(b, r))
}

/// JSON safe inside a `<script>` element.
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The timeline's columns: per app, seconds (or minutes for long windows) within
/// the window: requests, errors by cause, memory, restarts; and where to mark the
/// findings.
fn chart_data(b: &Bundle, r: &Report) -> Value {
    let long = b.to_ms.saturating_sub(b.from_ms) > 15 * 60 * 1000;
    let (from, to) = (b.from_ms / 1000, b.to_ms / 1000 + 1);
    let mut apps = Vec::new();
    for (app, h) in &b.history {
        let s = if long { &h["1m"] } else { &h["1s"] };
        let t = s["t"].as_array().cloned().unwrap_or_default();
        let keep: Vec<usize> = t
            .iter()
            .enumerate()
            .filter(|(_, x)| x.as_u64().is_some_and(|x| x >= from && x <= to))
            .map(|(i, _)| i)
            .collect();
        let pick = |v: &Value| -> Value {
            let a = v.as_array().cloned().unwrap_or_default();
            Value::Array(
                keep.iter()
                    .map(|&i| a.get(i).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        };
        let mut errors = serde_json::Map::new();
        if let Some(m) = s["errors"].as_object() {
            for (k, v) in m {
                errors.insert(k.clone(), pick(v));
            }
        }
        let marks: Vec<Value> = s["marks"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|x| x["t"].as_u64().is_some_and(|x| x >= from && x <= to))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        apps.push(json!({
            "app": app,
            "t": pick(&s["t"]),
            "requests": pick(&s["requests"]),
            "errors": errors,
            "memory_bytes": pick(&s["memory_bytes"]),
            "restarts": pick(&s["restarts"]),
            "marks": marks,
        }));
    }
    let findings: Vec<Value> = r
        .findings
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            Some(json!({"n": i + 1, "t": f.at_ms? / 1000, "id": f.id, "app": f.app}))
        })
        .collect();
    json!({"apps": apps, "findings": findings})
}

fn finding_html(out: &mut String, n: usize, f: &Finding) {
    let sev = match f.severity {
        super::analyze::Severity::Critical => "critical",
        super::analyze::Severity::Warning => "warning",
        super::analyze::Severity::Info => "info",
    };
    let share = f.evidence.get("explains").cloned().unwrap_or(Value::Null);
    let explains = match (share["failed"].as_u64(), share["of"].as_u64()) {
        (Some(x), Some(of)) if of > 0 && x > 0 => {
            format!("explains {x} of {of} failed requests ({}%)", x * 100 / of)
        }
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<section class=\"finding {sev}\" id=\"f{n}\"><h3><span class=\"n\">{n}</span> \
         <span class=\"sev\">{sev}</span> <code>{}</code> {}</h3>",
        Esc(f.id),
        Esc(&f.title)
    );
    if !explains.is_empty() {
        let _ = write!(out, "<p class=\"explains\">{}</p>", Esc(&explains));
    }
    let _ = write!(
        out,
        "<p class=\"meta\">app <b>{}</b>{}</p>",
        Esc(f.app.as_deref().unwrap_or("-")),
        if f.instances.is_empty() {
            String::new()
        } else {
            format!(" · instances {}", Esc(&f.instances.join(", ")))
        }
    );
    let _ = write!(
        out,
        "<p class=\"mitigation\"><b>What to do:</b> {}</p>",
        Esc(&f.mitigation)
    );
    if let Some(ids) = f.evidence.get("request_ids").and_then(Value::as_array) {
        if !ids.is_empty() {
            let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
            let _ = write!(
                out,
                "<p class=\"ids\">example request ids: <code>{}</code> (<code>healgate why ID</code>)</p>",
                Esc(&ids.join(" "))
            );
        }
    }
    if let Some(lines) = f.evidence.get("lines").and_then(Value::as_array) {
        if !lines.is_empty() {
            out.push_str("<pre class=\"lines\">");
            for l in lines.iter().filter_map(Value::as_str) {
                let _ = writeln!(out, "{}", Esc(l));
            }
            out.push_str("</pre>");
        }
    }
    let evidence = serde_json::to_string_pretty(&f.evidence).unwrap_or_default();
    let _ = write!(
        out,
        "<details><summary>Evidence</summary><pre>{}</pre></details></section>",
        Esc(&evidence)
    );
}

/// A file of the bundle shown raw, at most `max` bytes of its end.
fn raw_file(out: &mut String, dir: &Path, name: &str, max: usize) {
    let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
        return;
    };
    let shown = if text.len() > max {
        let mut s = text.len() - max;
        while !text.is_char_boundary(s) {
            s += 1;
        }
        &text[s..]
    } else {
        &text[..]
    };
    let _ = write!(
        out,
        "<details><summary>{} ({} lines{})</summary><pre>{}</pre></details>",
        Esc(name),
        text.lines().count(),
        if shown.len() < text.len() {
            ", the end"
        } else {
            ""
        },
        Esc(shown)
    );
}

fn files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(d) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = d.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            files(&p, base, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.display().to_string());
        }
    }
}

/// The page.
pub fn html(b: &Bundle, r: &Report) -> String {
    let mut out = String::with_capacity(UPLOT_JS.len() + 64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>healgate diagnosis {}</title><style>{UPLOT_CSS}\n{CSS}</style></head><body>",
        Esc(&r.created)
    );
    let _ = write!(
        out,
        "<header><p class=\"kicker\">healgate diagnosis · {} · {} → {}</p><h1 id=\"headline\">{}</h1>\
         <p class=\"summary\">{} requests in the window, {} failed (5xx) · {} findings</p></header><main>",
        Esc(r.app.as_deref().unwrap_or("all apps")),
        Esc(&r.from),
        Esc(&r.to),
        Esc(&r.headline),
        r.requests,
        r.failed,
        r.findings.len()
    );
    out.push_str("<h2>Timeline</h2><div id=\"charts\"><p class=\"none\" id=\"nochart\">No metric history in this bundle.</p></div>");
    out.push_str("<h2>Findings, most likely cause first</h2>");
    for (i, f) in r.findings.iter().enumerate() {
        finding_html(&mut out, i + 1, f);
    }
    out.push_str("<h2>Raw evidence</h2>");
    for (name, max) in [
        ("access.jsonl", 200_000),
        ("events.jsonl", 200_000),
        ("bundle.json", 50_000),
        ("facts.json", 50_000),
        ("environment.json", 50_000),
        ("config.txt", 100_000),
    ] {
        raw_file(&mut out, &b.dir, name, max);
    }
    let mut outputs = Vec::new();
    files(&b.dir.join("output"), &b.dir, &mut outputs);
    for o in &outputs {
        raw_file(&mut out, &b.dir, o, 50_000);
    }
    let mut all = Vec::new();
    files(&b.dir, &b.dir, &mut all);
    let _ = write!(
        out,
        "<details><summary>Every file of the bundle ({})</summary><pre>{}</pre></details>",
        all.len(),
        Esc(&all.join("\n"))
    );
    let _ = write!(
        out,
        "</main><footer>Written by healgate {} from the bundle in this folder; re-analyze with \
         <code>healgate diagnose --analyze DIR</code>. Charts: uPlot (MIT).</footer>\
         <script type=\"application/json\" id=\"data\">{}</script>\
         <script>{UPLOT_JS}</script><script>{SCRIPT}</script>\
         <!-- uPlot license:\n{}\n--></body></html>",
        env!("CARGO_PKG_VERSION"),
        script_json(&chart_data(b, r)),
        UPLOT_LICENSE.replace("--", "- -")
    );
    out
}

const CSS: &str = r#"
:root { color-scheme: light dark; --bg:#fff; --fg:#1b1f24; --mute:#5b6470; --line:#d8dde3;
  --crit:#c62828; --warn:#b26a00; --info:#1565c0; --card:#f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --bg:#111418; --fg:#e6e9ed; --mute:#9aa4ae;
  --line:#2c333b; --card:#181c21; } }
body { margin:0; font:15px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { padding:20px 24px 8px; border-bottom:1px solid var(--line); }
h1 { font-size:20px; margin:4px 0 6px; }
h2 { font-size:16px; margin:28px 0 10px; }
main { padding:0 24px 24px; max-width:1200px; }
.kicker, .summary, .meta, footer { color:var(--mute); font-size:13px; margin:0; }
footer { padding:16px 24px; border-top:1px solid var(--line); }
.finding { background:var(--card); border-left:4px solid var(--info); border-radius:4px;
  padding:10px 14px; margin:10px 0; }
.finding.critical { border-color:var(--crit); } .finding.warning { border-color:var(--warn); }
.finding h3 { font-size:15px; margin:0 0 4px; }
.finding .n { display:inline-block; min-width:20px; text-align:center; border-radius:10px;
  background:var(--fg); color:var(--bg); font-size:12px; }
.sev { text-transform:uppercase; font-size:11px; color:var(--mute); }
.explains { font-weight:600; margin:2px 0; }
pre { white-space:pre-wrap; word-break:break-all; font-size:12px; background:var(--bg);
  border:1px solid var(--line); padding:8px; max-height:420px; overflow:auto; }
details { margin:6px 0; } summary { cursor:pointer; color:var(--mute); }
.chart { margin:8px 0 16px; } .chart h4 { margin:0; font-size:13px; }
.none { color:var(--mute); }
"#;

const SCRIPT: &str = r#"
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('data').textContent);
  var holder = document.getElementById('charts');
  if (!data.apps.length || typeof uPlot === 'undefined') return;
  document.getElementById('nochart').remove();
  var palette = ['#c62828', '#6a1b9a', '#ef6c00', '#2e7d32', '#00838f', '#ad1457', '#4e342e', '#283593'];
  data.apps.forEach(function (a) {
    if (!a.t.length) return;
    var box = document.createElement('div');
    box.className = 'chart';
    var h = document.createElement('h4');
    h.textContent = a.app + ': requests, errors by cause, memory, restarts (numbered lines: findings)';
    box.appendChild(h);
    holder.appendChild(box);
    var series = [{}, { label: 'requests', stroke: '#1565c0', width: 1.5 }];
    var cols = [a.t, a.requests];
    Object.keys(a.errors).forEach(function (k, i) {
      series.push({ label: k, stroke: palette[i % palette.length], width: 1.5 });
      cols.push(a.errors[k]);
    });
    series.push({ label: 'memory MiB', stroke: '#2e7d32', scale: 'mem', dash: [4, 3],
      value: function (u, v) { return v == null ? '-' : v.toFixed(1); } });
    cols.push(a.memory_bytes.map(function (m) { return m == null ? null : m / 1048576; }));
    series.push({ label: 'restarts', stroke: '#000', scale: 'n', paths: uPlot.paths.bars({ size: [0.6, 6] }), fill: '#0006' });
    cols.push(a.restarts);
    var marks = data.findings.filter(function (f) { return f.app == null || f.app === a.app; });
    var width = Math.max(320, Math.min(1150, holder.clientWidth || 900));
    new uPlot({
      width: width, height: 260, series: series,
      axes: [{}, { label: 'per second' }, { scale: 'mem', side: 1, label: 'MiB', grid: { show: false } }],
      scales: { n: { range: [0, 5] } },
      hooks: { draw: [function (u) {
        var ctx = u.ctx;
        ctx.save();
        ctx.font = (11 * devicePixelRatio) + 'px sans-serif';
        (a.marks || []).forEach(function (m) {
          var x = u.valToPos(m.t, 'x', true);
          ctx.strokeStyle = '#9aa4ae'; ctx.setLineDash([2, 3]);
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        });
        marks.forEach(function (f) {
          var x = u.valToPos(f.t, 'x', true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          ctx.strokeStyle = '#c62828'; ctx.setLineDash([]); ctx.lineWidth = 2;
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillStyle = '#c62828';
          ctx.fillText(String(f.n) + ' ' + f.id, x + 3, u.bbox.top + 12 * devicePixelRatio * f.n);
        });
        ctx.restore();
      }] }
    }, cols, box);
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::super::analyze::{self, fixture};
    use super::*;

    #[test]
    fn values_are_escaped_and_nothing_is_fetched() {
        let mut b = fixture::bundle();
        b.dir = std::env::temp_dir().join(format!("healgate-report-{}", std::process::id()));
        let mut r = fixture::req(0, "/<script>alert(1)</script>", 500, None, 1.0);
        r.app = "web".into();
        b.access.push(r);
        b.output.insert(
            "web#1".into(),
            vec!["</script><img src=x onerror=alert(1)> error".into()],
        );
        b.history.insert(
            "web".into(),
            json!({"1s": {"app": "web", "t": [fixture::T0 / 1000 + 1],
            "requests": [1], "errors": {"app_5xx": [1]}, "memory_bytes": [1048576], "restarts": [0],
            "marks": [{"t": fixture::T0 / 1000 + 1, "text": "</script><b>x"}]}}),
        );
        let rep = analyze::analyze(&b);
        let page = html(&b, &rep);
        assert!(
            !page.contains("<img src=x"),
            "markup from the bundle is text"
        );
        assert!(
            !page.contains("</script><b>"),
            "a mark cannot end the data script"
        );
        assert!(page.contains("&lt;img src=x"));
        assert!(
            !page.contains("src=\"http")
                && !page.contains("href=\"http")
                && !page.contains("<link"),
            "no network"
        );
        assert!(page.contains("id=\"headline\""));
    }
}
