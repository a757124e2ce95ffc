//! A minimal QMP (QEMU Machine Protocol) client: one JSON object per line over a unix socket.
//!
//! The session: QEMU greets (`{"QMP":…}`), the client enters command mode with `qmp_capabilities`, then
//! sends commands; each is answered by `{"return":…}` or `{"error":…}`, with asynchronous events
//! (`{"event":…}`) interleaved. Events read while waiting for an answer are kept for [`Qmp::wait_event`].
//! Every read has a timeout so that a wedged QEMU cannot hang the caller.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::VmError;

/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line accepted from QEMU (answers are small; this bounds memory if the socket misbehaves).
const MAX_LINE: usize = 1 << 20;

pub struct Qmp {
    id: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities.
    pub async fn connect(id: &str, socket: &Path) -> Result<Qmp, VmError> {
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| qmp_err(id, "connecting timed out"))?
            .map_err(|e| qmp_err(id, format!("cannot connect to {}: {e}", socket.display())))?;
        let (r, w) = stream.into_split();
        let mut q = Qmp {
            id: id.to_owned(),
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = q.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_err(id, format!("unexpected greeting {greeting}")));
        }
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    /// Runs `command` and returns its `return` value; a QMP `error` answer is an error.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, VmError> {
        let mut msg = json!({ "execute": command });
        if let (Some(a), Some(o)) = (args, msg.as_object_mut()) {
            o.insert("arguments".into(), a);
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| qmp_err(&self.id, format!("sending {command}: {e}")))?;
        loop {
            let m = self.read_message().await?;
            if m.get("event").is_some() {
                self.events.push(m);
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(qmp_err(&self.id, format!("{command} failed: {e}")));
            }
        }
    }

    /// Waits up to `timeout` for an event named `name` whose data satisfies `matches`.
    pub async fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value, VmError> {
        let is_it = |e: &Value| e["event"] == name && matches(&e["data"]);
        if let Some(i) = self.events.iter().position(is_it) {
            return Ok(self.events.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = tokio::time::timeout(left, self.read_message())
                .await
                .map_err(|_| qmp_err(&self.id, format!("no {name} event within {timeout:?}")))??;
            if is_it(&m) {
                return Ok(m);
            }
        }
    }

    async fn read_message(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        let n = tokio::time::timeout(
            ANSWER_TIMEOUT,
            read_bounded_line(&mut self.reader, &mut line),
        )
        .await
        .map_err(|_| qmp_err(&self.id, "no answer within 10 s"))?
        .map_err(|e| qmp_err(&self.id, format!("reading: {e}")))?;
        if n == 0 {
            return Err(qmp_err(&self.id, "QEMU closed the control socket"));
        }
        serde_json::from_str(&line)
            .map_err(|e| qmp_err(&self.id, format!("unparsable message {line:?}: {e}")))
    }
}

async fn read_bounded_line(
    r: &mut BufReader<OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<usize> {
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if buf.len() > MAX_LINE {
            return Err(std::io::Error::other("QMP message longer than 1 MiB"));
        }
        if done {
            break;
        }
    }
    *line = String::from_utf8_lossy(&buf).into_owned();
    Ok(buf.len())
}

fn qmp_err(id: &str, detail: impl Into<String>) -> VmError {
    VmError::Qmp {
        id: id.to_owned(),
        detail: detail.into(),
    }
}
