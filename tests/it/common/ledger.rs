//! Reading a ledger file in the tests: the one place that knows its tables. Every read opens
//! the file read-only, so a test can look while klio-edge is still writing.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// One row of `items`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub element: String,
    pub source: String,
    pub state: String,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i64,
    pub input_hash: Option<String>,
    /// The committed file names.
    pub outputs: Vec<String>,
    /// The `models` column, parsed.
    pub models: Option<serde_json::Value>,
}

/// One row of `history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub element: String,
    pub state: String,
    pub error_kind: Option<String>,
}

fn open(ledger: &Path) -> Connection {
    Connection::open_with_flags(ledger, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", ledger.display()))
}

/// Every item, by element id; empty when there is no ledger yet.
pub fn rows(ledger: &Path) -> Vec<Row> {
    if !ledger.exists() {
        return Vec::new();
    }
    let c = open(ledger);
    let mut st = c
        .prepare(
            "SELECT element, source, state, error_kind, error_message, attempts, input_hash, \
             outputs, models FROM items ORDER BY element",
        )
        .unwrap();
    st.query_map([], |r| {
        let outputs: Option<String> = r.get(7)?;
        let models: Option<String> = r.get(8)?;
        Ok(Row {
            element: r.get(0)?,
            source: r.get(1)?,
            state: r.get(2)?,
            error_kind: r.get(3)?,
            error_message: r.get(4)?,
            attempts: r.get(5)?,
            input_hash: r.get(6)?,
            outputs: outputs
                .map(|o| serde_json::from_str(&o).expect("outputs is a JSON list"))
                .unwrap_or_default(),
            models: models.map(|m| serde_json::from_str(&m).expect("models is JSON")),
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The row of `element`.
pub fn row(ledger: &Path, element: &str) -> Row {
    rows(ledger)
        .into_iter()
        .find(|r| r.element == element)
        .unwrap_or_else(|| panic!("no ledger row for {element}"))
}

/// Elements `done`, sorted (none when there is no ledger yet).
pub fn done_elements(ledger: &Path) -> Vec<String> {
    in_state(ledger, "done")
}

/// Elements in `state`, sorted.
pub fn in_state(ledger: &Path, state: &str) -> Vec<String> {
    rows(ledger)
        .into_iter()
        .filter(|r| r.state == state)
        .map(|r| r.element)
        .collect()
}

/// The whole history, oldest first.
pub fn entries(ledger: &Path) -> Vec<Entry> {
    let c = open(ledger);
    let mut st = c
        .prepare("SELECT element, state, error_kind FROM history ORDER BY id")
        .unwrap();
    st.query_map([], |r| {
        Ok(Entry {
            element: r.get(0)?,
            state: r.get(1)?,
            error_kind: r.get(2)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The states `element` went through, oldest first.
pub fn history(ledger: &Path, element: &str) -> Vec<String> {
    entries(ledger)
        .into_iter()
        .filter(|h| h.element == element)
        .map(|h| h.state)
        .collect()
}

/// How many `done` entries each element has in the history.
pub fn done_counts(ledger: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for h in entries(ledger) {
        if h.state == "done" {
            *m.entry(h.element).or_insert(0) += 1;
        }
    }
    m
}

/// `PRAGMA integrity_check` says ok.
pub fn ledger_ok(ledger: &Path) -> bool {
    let r: String = open(ledger)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    r == "ok"
}
