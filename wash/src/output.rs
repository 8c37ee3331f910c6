//! What `wash` prints: a command's [`Report`] as text or JSON, plain-text tables, one-line
//! errors, and the progress spinners of long steps.

use std::time::Duration;

use serde_json::{Value, json};

/// The output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text and tables.
    Text,
    /// One JSON object per command.
    Json,
}

/// The result of a command, in both forms; `main` prints the one asked for.
#[derive(Debug, Default)]
pub struct Report {
    text: Option<String>,
    json: Option<Value>,
}

impl Report {
    /// A result shown as `text`, or as `json` with `"success": true` added.
    pub fn new(text: impl Into<String>, mut json: Value) -> Self {
        if let Value::Object(map) = &mut json {
            map.insert("success".into(), Value::Bool(true));
        }
        Self { text: Some(text.into()), json: Some(json) }
    }

    /// Its JSON form (`null` when it has none).
    pub fn json(&self) -> &Value {
        self.json.as_ref().unwrap_or(&Value::Null)
    }

    /// Drops the JSON form: for a command that already printed its JSON result.
    pub fn text_only(mut self) -> Self {
        self.json = None;
        self
    }

    /// Nothing more to print (the command printed as it went).
    pub fn none() -> Self {
        Self::default()
    }

    /// Prints the report to stdout.
    pub fn print(&self, format: Format) {
        match format {
            Format::Text => {
                if let Some(text) = &self.text {
                    let text = text.trim_end_matches('\n');
                    if !text.is_empty() {
                        // Table cells are escaped whole; this catches control characters anywhere
                        // else in the text, keeping only the report's own line breaks.
                        let text: String = text.split('\n').map(|l| escape(l).into_owned()).collect::<Vec<_>>().join("\n");
                        print_stdout(&format!("{text}\n"));
                    }
                }
            }
            Format::Json => {
                if let Some(json) = &self.json {
                    print_stdout(&format!("{json}\n"));
                }
            }
        }
    }
}

/// A failure with more to say than one line (`app validate`'s list of mistakes): in text, the
/// detail lines go to stderr before the `error:` line; in JSON, `json`'s fields go into the
/// `{"success": false, "error": …}` object.
#[derive(Debug)]
pub struct Failure {
    /// What the `error:` line says.
    pub summary: String,
    /// Lines printed before it, in text.
    pub details: Vec<String>,
    /// Fields of the JSON object.
    pub json: Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Failure {}

/// Prints a failure: always a single `error: …` line on stderr, plus `{"success":false,…}` on
/// stdout in JSON mode (a [`Failure`] adds its detail lines, or its JSON fields).
pub fn print_error(format: Format, err: &anyhow::Error) {
    if let Some(failure) = err.downcast_ref::<Failure>() {
        let message = escape(&one_line(&failure.summary)).into_owned();
        match format {
            Format::Json => {
                let mut json = failure.json.clone();
                if let Value::Object(map) = &mut json {
                    map.insert("success".into(), Value::Bool(false));
                    map.insert("error".into(), Value::String(message.clone()));
                }
                print_stdout(&format!("{json}\n"));
            }
            Format::Text => {
                for line in &failure.details {
                    eprintln!("{}", escape(&one_line(line)));
                }
            }
        }
        eprintln!("error: {message}");
        return;
    }
    let message = escape(&one_line(&format!("{err:#}"))).into_owned();
    if format == Format::Json {
        print_stdout(&format!("{}\n", json!({"success": false, "error": message})));
    }
    eprintln!("error: {message}");
}

/// Writes to stdout, ignoring a closed pipe (`wash get hosts | head -1`) instead of panicking.
pub fn print_stdout(s: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

/// Collapses whitespace runs that contain line breaks, so an error stays on one line.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Whether `c` must not reach a terminal as it is: a control character (C0, DEL, C1: escape
/// sequences, carriage returns, line breaks that would forge table rows) or a bidirectional
/// override or isolate (which reorders what follows on the line).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from the lattice (labels, names, references, messages) made safe to print: every
/// [`is_unsafe_char`] becomes `\n`, `\r`, `\t` or `\u{…}`, so an ANSI escape in a label can
/// neither clear the screen nor forge a table line. JSON output needs none of this.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Formats rows under headers in columns separated by two spaces; an empty table says `none`.
/// Cells are [`escape`]d, so one row is one line whatever the lattice sent.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| escape(c).into_owned()).collect()).collect();
    let rows = rows.as_slice();
    if rows.is_empty() {
        return format!("{}\n(none)\n", headers.join("  "));
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// `k=v,k2=v2` ([`escape`]d), or `-` when empty.
pub fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let joined = map.into_iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect::<Vec<_>>().join(",");
    dash(joined)
}

/// The items ([`escape`]d) joined with `,`, or `-` when empty.
pub fn list(items: &[String]) -> String {
    dash(items.iter().map(|i| escape(i)).collect::<Vec<_>>().join(","))
}

fn dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// A spinner on stderr for one step; hidden when stderr is not a terminal or output is JSON.
pub struct Step {
    bar: indicatif::ProgressBar,
}

impl Step {
    /// Starts spinning with `message`.
    pub fn start(format: Format, message: impl Into<String>) -> Self {
        let bar = if format == Format::Text { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
        bar.set_message(escape(&message.into()).into_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar }
    }

    /// Stops spinning, leaving `message` as the step's line.
    pub fn done(self, message: impl Into<String>) {
        self.bar.finish_with_message(format!("✓ {}", escape(&message.into())));
    }

    /// Stops spinning and removes the line (the error is reported elsewhere).
    pub fn fail(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["ID", "NAME"], &[vec!["a".into(), "x".into()], vec!["long-id".into(), "y".into()]]);
        assert_eq!(t, "ID       NAME\na        x\nlong-id  y\n");
        assert_eq!(table(&["ID"], &[]), "ID\n(none)\n");
    }

    #[test]
    fn lattice_text_cannot_reach_the_terminal_raw() {
        assert_eq!(escape("zone=edge"), "zone=edge");
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("x\r\ny\tz\u{7f}\u{9b}\u{202e}"), "x\\r\\ny\\tz\\u{7f}\\u{9b}\\u{202e}");
        assert_eq!(escape(&escape("\u{1b}")), escape("\u{1b}"), "escaping twice changes nothing");
        let forged = "edge\nNFAKE  forged-host  1s  -";
        let t = table(&["ID", "LABELS"], &[vec!["NREAL".into(), forged.into()]]);
        assert_eq!(t.lines().count(), 2, "one header and one row: {t}");
        assert!(!t.chars().any(|c| c != '\n' && is_unsafe_char(c)), "{t:?}");
        let labels: std::collections::BTreeMap<String, String> = [("k\u{1b}".to_string(), "v\n".to_string())].into();
        assert_eq!(pairs(&labels), "k\\u{1b}=v\\n");
        assert_eq!(list(&["a\u{7}".into()]), "a\\u{7}");
    }

    #[test]
    fn errors_fit_on_one_line() {
        assert_eq!(one_line("a\n  b\r\n\nc"), "a b c");
    }

    #[test]
    fn json_reports_say_success() {
        let r = Report::new("x", json!({"component_id": "c"}));
        assert_eq!(r.json, Some(json!({"success": true, "component_id": "c"})));
    }
}
