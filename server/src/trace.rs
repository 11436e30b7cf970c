//! `surety.test.trace.dir`: every actor step this node takes, appended as one JSON line to
//! `<dir>/node-<id>.trace`, for `model replay` (see `surety_core::trace`).
//!
//! Each line is written with one `write` call on an unbuffered file while the actor's lock is
//! held, so the file's order is the actor's order and a killed process loses no step it took
//! (the page cache keeps what was written). A test hook: it costs a syscall per step.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use surety_core::trace::{Step, TraceStep};

/// Where this node's steps go.
#[derive(Debug)]
pub struct TraceWriter {
    node: i32,
    file: Mutex<File>,
}

impl TraceWriter {
    /// Opens (appending) the trace of node `node` in `dir`.
    pub fn open(dir: &Path, node: i32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{node}.trace")))?;
        Ok(TraceWriter {
            node,
            file: Mutex::new(file),
        })
    }

    /// Appends one step, stamped now.
    pub fn record(&self, step: Step) {
        let at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let line = TraceStep {
            at_ns,
            node: self.node,
            step,
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!("cannot encode a trace step: {e}");
                return;
            }
        };
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::error!("cannot write the trace: {e}");
        }
    }
}
