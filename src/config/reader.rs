//! Reading a parsed TOML document key by key, collecting every problem with its place.
//!
//! [`TableReader`] is our `deny_unknown_fields`: keys are taken one by one and
//! [`TableReader::finish`] reports each key nobody took, with the allowed list. Typed
//! reads on a [`Field`] record a problem and return `None` instead of stopping, so one
//! pass finds every mistake in the file.

use std::ops::Range;
use std::time::Duration;

use toml_edit::{ArrayOfTables, Item, Table, TableLike, Value};

use super::units;
use super::{Problem, Severity};

/// A byte range in the config text.
pub(crate) type Span = Option<Range<usize>>;

/// The problems found so far, and how to turn byte offsets into lines and columns.
pub(crate) struct Ctx<'s> {
    src: &'s str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

impl<'s> Ctx<'s> {
    /// A context for the text `src`.
    pub fn new(src: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            src,
            line_starts,
            problems: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of the start of `span`; `(0, 0)` if unknown.
    pub fn locate(&self, span: &Span) -> (usize, usize) {
        let Some(span) = span else { return (0, 0) };
        let offset = span.start.min(self.src.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self
            .src
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count());
        (line, column + 1)
    }

    /// Records a problem at `span`.
    pub fn report(&mut self, severity: Severity, path: &str, span: &Span, message: String) {
        let (line, column) = self.locate(span);
        self.problems.push(Problem {
            severity,
            path: path.to_string(),
            line,
            column,
            message,
        });
    }

    /// Records an error at `span`.
    pub fn error(&mut self, path: &str, span: &Span, message: impl Into<String>) {
        self.report(Severity::Error, path, span, message.into());
    }

    /// Records a warning at `span`.
    pub fn warning(&mut self, path: &str, span: &Span, message: impl Into<String>) {
        self.report(Severity::Warning, path, span, message.into());
    }

    /// True once any error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// What a field holds.
#[derive(Clone, Copy)]
pub(crate) enum Node<'d> {
    Value(&'d Value),
    Table(&'d Table),
    Tables(&'d ArrayOfTables),
}

impl<'d> Node<'d> {
    fn of(item: &'d Item) -> Option<Self> {
        match item {
            Item::None => None,
            Item::Value(v) => Some(Node::Value(v)),
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
        }
    }

    /// "a string", "an integer", ... for "found ..." messages.
    fn describe(self) -> &'static str {
        match self {
            Node::Value(Value::String(_)) => "a string",
            Node::Value(Value::Integer(_)) => "an integer",
            Node::Value(Value::Float(_)) => "a float",
            Node::Value(Value::Boolean(_)) => "a boolean",
            Node::Value(Value::Datetime(_)) => "a date-time",
            Node::Value(Value::Array(_)) => "an array",
            Node::Value(Value::InlineTable(_)) | Node::Table(_) => "a table",
            Node::Tables(_) => "an array of tables",
        }
    }
}

/// One value taken from a table or array: what it holds, its key path and its place.
#[derive(Clone)]
pub(crate) struct Field<'d> {
    pub node: Node<'d>,
    /// Key path, e.g. `upstream[1].health.interval`.
    pub path: String,
    /// Where the value is; the key's place when the value has none.
    pub span: Span,
}

impl<'d> Field<'d> {
    /// Records an error at this field.
    pub fn error(&self, cx: &mut Ctx, message: impl Into<String>) {
        cx.error(&self.path, &self.span, message);
    }

    /// Records a warning at this field.
    pub fn warning(&self, cx: &mut Ctx, message: impl Into<String>) {
        cx.warning(&self.path, &self.span, message);
    }

    /// Records "expected {what}, found a ...".
    pub fn mismatch(&self, cx: &mut Ctx, what: &str) {
        let found = self.node.describe();
        self.error(cx, format!("expected {what}, found {found}"));
    }

    fn value(&self) -> Option<&'d Value> {
        match self.node {
            Node::Value(v) => Some(v),
            _ => None,
        }
    }

    /// A string.
    pub fn str(&self, cx: &mut Ctx) -> Option<&'d str> {
        let s = self.value().and_then(Value::as_str);
        if s.is_none() {
            self.mismatch(cx, "a string");
        }
        s
    }

    /// A string that is not empty.
    pub fn text(&self, cx: &mut Ctx) -> Option<String> {
        let s = self.str(cx)?;
        if s.is_empty() {
            self.error(cx, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }

    /// `true` or `false`.
    pub fn bool(&self, cx: &mut Ctx) -> Option<bool> {
        let b = self.value().and_then(Value::as_bool);
        if b.is_none() {
            self.mismatch(cx, "true or false");
        }
        b
    }

    /// An integer in `min..=max`.
    pub fn int(&self, cx: &mut Ctx, min: i64, max: i64) -> Option<i64> {
        // Past u32::MAX the upper bound is a representation limit, not advice.
        let range = if max >= i64::from(u32::MAX) {
            format!("an integer of at least {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        let Some(n) = self.value().and_then(Value::as_integer) else {
            self.mismatch(cx, &range);
            return None;
        };
        if n < min || n > max {
            self.error(cx, format!("expected {range}, found {n}"));
            return None;
        }
        Some(n)
    }

    /// An integer in `min..=u32::MAX`.
    pub fn u32(&self, cx: &mut Ctx, min: u32) -> Option<u32> {
        self.int(cx, min.into(), u32::MAX.into()).map(|n| n as u32)
    }

    /// A non-negative integer as a count.
    pub fn u64(&self, cx: &mut Ctx, min: u64) -> Option<u64> {
        self.int(cx, min as i64, i64::MAX).map(|n| n as u64)
    }

    /// An integer or float in `min..=max`.
    pub fn number(&self, cx: &mut Ctx, min: f64, max: f64) -> Option<f64> {
        let range = format!("a number from {min} to {max}");
        let n = match self.value() {
            Some(Value::Integer(i)) => *i.value() as f64,
            Some(Value::Float(f)) => *f.value(),
            _ => {
                self.mismatch(cx, &range);
                return None;
            }
        };
        if !(min..=max).contains(&n) {
            self.error(cx, format!("expected {range}, found {n}"));
            return None;
        }
        Some(n)
    }

    /// A duration in human units (`"500ms"`, `"1h30m"`).
    pub fn duration(&self, cx: &mut Ctx) -> Option<Duration> {
        let result = match self.value() {
            Some(Value::String(s)) => units::parse_duration(s.value()),
            Some(Value::Integer(i)) => Err(units::bare_number_duration(&i.value().to_string())),
            Some(Value::Float(f)) => Err(units::bare_number_duration(&f.value().to_string())),
            _ => {
                self.mismatch(cx, r#"a duration like "500ms", "2s" or "1m""#);
                return None;
            }
        };
        result.map_err(|message| self.error(cx, message)).ok()
    }

    /// A duration greater than zero.
    pub fn positive_duration(&self, cx: &mut Ctx) -> Option<Duration> {
        let d = self.duration(cx)?;
        if d.is_zero() {
            self.error(cx, "must be longer than 0s");
            return None;
        }
        Some(d)
    }

    /// A size in bytes: `"32KiB"`, `"100MB"` or a bare integer.
    pub fn size(&self, cx: &mut Ctx) -> Option<u64> {
        let result = match self.value() {
            Some(Value::String(s)) => units::parse_size(s.value()),
            Some(Value::Integer(i)) => match u64::try_from(*i.value()) {
                Ok(n) => Ok(n),
                Err(_) => Err(format!("a size cannot be negative, found {}", i.value())),
            },
            _ => {
                self.mismatch(cx, r#"a size like "32KiB", "100MB" or a number of bytes"#);
                return None;
            }
        };
        result.map_err(|message| self.error(cx, message)).ok()
    }

    /// The elements of an array; `what` names what is expected ("an array of strings").
    pub fn array(&self, cx: &mut Ctx, what: &str) -> Option<Vec<Field<'d>>> {
        let Some(array) = self.value().and_then(Value::as_array) else {
            self.mismatch(cx, what);
            return None;
        };
        Some(
            array
                .iter()
                .enumerate()
                .map(|(i, v)| Field {
                    node: Node::Value(v),
                    path: format!("{}[{i}]", self.path),
                    span: v.span().or_else(|| self.span.clone()),
                })
                .collect(),
        )
    }

    /// An array of strings. `None` (with each bad element reported) when any is not one.
    pub fn strings(&self, cx: &mut Ctx) -> Option<Vec<String>> {
        let mut all = Some(Vec::new());
        for element in self.array(cx, "an array of strings")? {
            match (element.str(cx), all.as_mut()) {
                (Some(s), Some(all)) => all.push(s.to_string()),
                (Some(_), None) => {}
                (None, _) => all = None,
            }
        }
        all
    }

    /// A table: a `[header]` table or an inline `{ ... }` one.
    pub fn table(&self, cx: &mut Ctx) -> Option<TableReader<'d>> {
        let table: &'d dyn TableLike = match self.node {
            Node::Table(t) => t,
            Node::Value(Value::InlineTable(t)) => t,
            _ => {
                self.mismatch(cx, "a table");
                return None;
            }
        };
        Some(TableReader::new(
            table,
            self.path.clone(),
            self.span.clone(),
        ))
    }

    /// An array of tables: `[[name]]` sections or an array of inline tables.
    pub fn tables(&self, cx: &mut Ctx) -> Option<Vec<TableReader<'d>>> {
        let what = "an array of tables";
        match self.node {
            Node::Tables(tables) => Some(
                tables
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let span = t.span().or_else(|| self.span.clone());
                        TableReader::new(t, format!("{}[{i}]", self.path), span)
                    })
                    .collect(),
            ),
            Node::Value(Value::Array(_)) => {
                let mut readers = Vec::new();
                for element in self.array(cx, what)? {
                    readers.push(element.table(cx)?);
                }
                Some(readers)
            }
            _ => {
                self.mismatch(cx, what);
                None
            }
        }
    }
}

/// Takes the keys of one table one by one and reports, at [`finish`](Self::finish),
/// every key nobody took.
pub(crate) struct TableReader<'d> {
    table: &'d dyn TableLike,
    /// Key path of the table itself; empty for the document root.
    pub path: String,
    /// The table's header or inline braces: where "missing key" errors point.
    pub span: Span,
    /// Keys asked for, in order: the allowed list.
    asked: Vec<&'static str>,
}

impl<'d> TableReader<'d> {
    /// A reader of `table` at key path `path`.
    pub fn new(table: &'d dyn TableLike, path: String, span: Span) -> Self {
        TableReader {
            table,
            path,
            span,
            asked: Vec::new(),
        }
    }

    /// The document's root table.
    pub fn root(table: &'d Table) -> Self {
        Self::new(table, String::new(), Some(0..0))
    }

    /// Takes `key`, allowing it whether or not it is present.
    pub fn take(&mut self, key: &'static str) -> Option<Field<'d>> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.field(key)
    }

    /// Takes every key, for tables whose keys are data (like `env`).
    pub fn take_all(self) -> Vec<(&'d str, Field<'d>)> {
        let table = self.table;
        table
            .iter()
            .filter_map(|(key, _)| Some((key, self.field(key)?)))
            .collect()
    }

    fn field(&self, key: &str) -> Option<Field<'d>> {
        let table = self.table;
        let (k, item) = table.get_key_value(key)?;
        let node = Node::of(item)?;
        // Header tables (`[a.b]`) point at their header; implicit and dotted ones have
        // no place of their own, so they point at their key.
        let own_span = match node {
            Node::Table(t) if t.is_implicit() || t.is_dotted() => None,
            _ => item.span(),
        };
        Some(Field {
            node,
            path: join(&self.path, key),
            span: own_span.or_else(|| k.span()).or_else(|| self.span.clone()),
        })
    }

    /// Takes `key`, recording an error when it is absent.
    pub fn require(&mut self, cx: &mut Ctx, key: &'static str) -> Option<Field<'d>> {
        let field = self.take(key);
        if field.is_none() {
            cx.error(&self.path, &self.span, format!("missing key {key:?}"));
        }
        field
    }

    /// Takes `key` when present and reads it with `read`; `None` when absent or bad.
    pub fn get<T>(
        &mut self,
        cx: &mut Ctx,
        key: &'static str,
        read: impl FnOnce(&Field<'d>, &mut Ctx) -> Option<T>,
    ) -> Option<T> {
        self.take(key).and_then(|field| read(&field, cx))
    }

    /// Every key of the table with its place, in file order.
    pub fn entries(&self) -> Vec<(&'d str, Span)> {
        let table = self.table;
        table
            .iter()
            .map(|(key, _)| {
                let span = table
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| self.span.clone());
                (key, span)
            })
            .collect()
    }

    /// Reports every key that was not taken: `unknown key "listn"; allowed: ...`.
    pub fn finish(self, cx: &mut Ctx) {
        for (key, span) in self.entries() {
            if self.asked.contains(&key) {
                continue;
            }
            let hint = match closest(key, &self.asked) {
                Some(near) => format!(" (did you mean {near:?}?)"),
                None => String::new(),
            };
            let allowed = if self.asked.is_empty() {
                "none".to_string()
            } else {
                self.asked.join(", ")
            };
            cx.error(
                &join(&self.path, key),
                &span,
                format!("unknown key {key:?}{hint}; allowed: {allowed}"),
            );
        }
    }
}

/// The allowed key nearest to a misspelt one, when it is near enough to be a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|&(d, a)| d <= 2 && d < a.len().max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> toml_edit::Document<String> {
        toml_edit::Document::parse(text.to_string()).expect("valid TOML")
    }

    #[test]
    fn lines_and_columns_are_one_based_in_characters() {
        let cx = Ctx::new("a = 1\nbé = \"x\"\n");
        assert_eq!(cx.locate(&Some(0..1)), (1, 1));
        assert_eq!(cx.locate(&Some(6..7)), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(cx.locate(&Some(12..15)), (2, 6));
        assert_eq!(cx.locate(&None), (0, 0));
    }

    #[test]
    fn unknown_keys_are_reported_with_the_allowed_list() {
        let d = doc("[gateway]\nlistn = []\nworkers = 2\n");
        let mut cx = Ctx::new(d.raw());
        let mut root = TableReader::root(d.as_table());
        let gateway = root.take("gateway").unwrap();
        let mut gateway = gateway.table(&mut cx).unwrap();
        assert!(gateway.take("listen").is_none());
        let workers = gateway.take("workers").unwrap();
        assert_eq!(workers.int(&mut cx, 0, 1024), Some(2));
        gateway.finish(&mut cx);
        root.finish(&mut cx);
        assert_eq!(cx.problems.len(), 1);
        let p = &cx.problems[0];
        assert_eq!(p.path, "gateway.listn");
        assert_eq!((p.line, p.column), (2, 1));
        assert_eq!(
            p.message,
            r#"unknown key "listn" (did you mean "listen"?); allowed: listen, workers"#
        );
    }

    #[test]
    fn type_mismatches_name_both_sides() {
        let d = doc("name = 5\nlist = [\"a\", 2]\n");
        let mut cx = Ctx::new(d.raw());
        let mut root = TableReader::root(d.as_table());
        assert_eq!(root.get(&mut cx, "name", Field::str), None);
        assert_eq!(root.get(&mut cx, "list", Field::strings), None);
        root.finish(&mut cx);
        let got: Vec<_> = cx
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.line, p.column, p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("name", 1, 8, "expected a string, found an integer"),
                ("list[1]", 2, 14, "expected a string, found an integer"),
            ]
        );
    }

    #[test]
    fn edit_distance_finds_typos_only() {
        assert_eq!(closest("listn", &["listen", "workers"]), Some("listen"));
        assert_eq!(closest("xyz", &["listen", "workers"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
