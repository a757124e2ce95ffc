//! Replication of a run's disks (DESIGN.md §4): read fixed-size chunks, skip zeros and chunks unchanged
//! since the previous snapshot, ask the server in batches which chunks it lacks, upload those compressed
//! with several requests in flight, then commit each disk's index.
//!
//! Invariants:
//! - Memory is bounded whatever the disk size: at most `buffers` chunks are held at once (reading stalls
//!   until uploads free a buffer), plus the index (32 bytes per chunk).
//! - Every transient failure (network, server restart, full server disk) is retried with backoff until the
//!   run is stopped; the run then resumes where it was, because the server is asked before anything is sent.
//! - The source is only read, never written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_chunk::{Digest, DiskIndex};
use ferry_types::protocol::{
    ChunkStored, MissingRequest, MissingResponse, ReplicateTask, RunFinish, RunProgress,
    SnapshotCommitted,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{CallError, Conn};

/// Digests per "which are missing" request.
const MISSING_BATCH: usize = 64;
/// Chunk uploads in flight.
const UPLOADS_IN_FLIGHT: usize = 6;
/// Disk reads in flight (a queue at the device; readahead does the rest).
const READS_IN_FLIGHT: usize = 4;
/// Memory for chunk buffers (read, waiting for the missing answer, compressing, uploading).
const BUFFER_BUDGET: usize = 32 << 20;

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    #[error("the run was stopped")]
    Stopped,
    #[error("disk {disk} is not known to this agent: re-activate it with that disk (--disk)")]
    UnknownDisk { disk: u32 },
    #[error(
        "cannot read disk {path} at offset {offset}: {source}. Check the device and the agent's permissions"
    )]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open disk {path}: {source}. Check that it exists and that ferry-agent runs as root"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "disk {disk} ({path}) changed while it was read: the chunk at offset {offset} differs between the first \
         read and the checksum re-read, so the snapshot would not be one point in time. Quiesce the source \
         (stop writers, or replicate an LVM/filesystem snapshot) and start the job again, or turn `checksum` off"
    )]
    Unstable {
        disk: u32,
        path: PathBuf,
        offset: u64,
    },
    #[error(
        "pre-cutover hook {name} failed ({status}); nothing was copied. Fix the hook (or remove it from \
         {dir}) on the source and start the job again. Its output ended with: {output_tail}"
    )]
    Hook {
        name: String,
        dir: String,
        /// `exit code N`, `killed by signal N`, `timed out after 300 s` or why it could not run.
        status: String,
        output_tail: String,
    },
    #[error(transparent)]
    Server(#[from] CallError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReplicateError {
    /// The job error code reported to the server.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Read { .. } | Self::Open { .. } => "Disk.ReadFailed",
            Self::UnknownDisk { .. } => "Disk.Unknown",
            Self::Unstable { .. } => "Disk.Unstable",
            Self::Hook { .. } => "Hook.Failed",
            Self::Server(_) => "Server.Rejected",
            Self::Stopped => "Stopped",
            Self::Internal(_) => "Agent.InternalError",
        }
    }
}

/// Shared run figures, updated lock-free by the pipeline.
#[derive(Debug, Default)]
pub struct Counters {
    pub total: AtomicU64,
    pub scanned: AtomicU64,
    pub sent: AtomicU64,
    pub uploaded_logical: AtomicU64,
    pub zero: AtomicU64,
    pub unchanged: AtomicU64,
    pub dedup: AtomicU64,
    pub paused: Mutex<Option<String>>,
}

impl Counters {
    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, started: Instant, throughput: u64) -> RunProgress {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let total = get(&self.total);
        let scanned = get(&self.scanned);
        RunProgress {
            bytes_total: total,
            bytes_scanned: scanned,
            bytes_sent: get(&self.sent),
            bytes_uploaded_logical: get(&self.uploaded_logical),
            bytes_zero: get(&self.zero),
            bytes_unchanged: get(&self.unchanged),
            bytes_dedup: get(&self.dedup),
            throughput_bps: throughput,
            eta_secs: (throughput > 0).then(|| total.saturating_sub(scanned) / throughput),
            elapsed_ms: started.elapsed().as_millis() as u64,
            paused_reason: self.paused.lock().ok().and_then(|p| p.clone()),
        }
    }
}

/// Paces uploads to a byte rate: each send is scheduled `len / rate` after the previous one.
pub struct RateLimiter {
    rate: f64,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            rate: bytes_per_sec.max(1) as f64,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self, bytes: usize) {
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.rate);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// Everything one run's pipeline shares.
struct RunCtx {
    conn: Conn,
    task: ReplicateTask,
    counters: Arc<Counters>,
    limiter: Option<RateLimiter>,
    level: LevelChooser,
    cancel: CancellationToken,
    cpu: Arc<Semaphore>,
}

/// Runs a replication task to the end (or until cancelled). Reports progress every second and the
/// outcome at the end.
pub async fn run_task(
    conn: Conn,
    task: ReplicateTask,
    disks: Vec<PathBuf>,
    cancel: CancellationToken,
) -> Result<RunProgress, ReplicateError> {
    let counters = Arc::new(Counters::default());
    if let Some(prev) = &task.previous {
        // A resumed run: what was sent before the interruption still counts.
        counters.sent.store(prev.bytes_sent, Ordering::Relaxed);
        counters
            .uploaded_logical
            .store(prev.bytes_uploaded_logical, Ordering::Relaxed);
    }
    let started = Instant::now();
    if task.pre_cutover_hooks {
        // Before any disk is read: the owner's hooks stop services so the final sync is consistent.
        if let Err(e) = run_pre_cutover_hooks(&hooks_dir(), &cancel).await {
            if !matches!(e, ReplicateError::Stopped) {
                let finish = RunFinish::Failed {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                };
                let run = task.run_id.clone();
                let _ = conn
                    .post::<_, serde_json::Value>(&format!("/runs/{run}/finish"), &finish)
                    .await;
            }
            return Err(e);
        }
    }
    let mut todo = Vec::new();
    for &d in &task.disks {
        let path = disks
            .get(d as usize)
            .ok_or(ReplicateError::UnknownDisk { disk: d })?;
        let size = disk_size(path)?;
        counters.total.fetch_add(size, Ordering::Relaxed);
        if task.committed_disks.contains(&d) {
            counters.scanned.fetch_add(size, Ordering::Relaxed);
        } else {
            todo.push((d, path.clone()));
        }
    }
    let level = LevelChooser::new(task.compress_level, task.bandwidth_limit_bps);
    let ctx = Arc::new(RunCtx {
        limiter: task.bandwidth_limit_bps.map(RateLimiter::new),
        conn,
        task,
        counters: counters.clone(),
        level,
        cancel,
        cpu: Arc::new(Semaphore::new(cpus())),
    });
    let reporter = tokio::spawn(report_progress(ctx.clone(), started));
    let result = async {
        for (disk, path) in todo {
            replicate_disk(&ctx, disk, &path).await?;
        }
        Ok::<_, ReplicateError>(())
    }
    .await;
    reporter.abort();
    let progress = counters.snapshot(started, throughput(&counters, started));
    let run = ctx.task.run_id.clone();
    match result {
        Ok(()) => {
            let finish = RunFinish::Succeeded {
                progress: progress.clone(),
            };
            retry(&ctx, "finish the run", || async {
                ctx.conn
                    .post::<_, serde_json::Value>(&format!("/runs/{run}/finish"), &finish)
                    .await
            })
            .await?;
            Ok(progress)
        }
        Err(ReplicateError::Stopped) => Err(ReplicateError::Stopped),
        Err(e) => {
            let finish = RunFinish::Failed {
                code: e.code().to_owned(),
                message: e.to_string(),
            };
            // Best effort: if the server cannot be told, the job shows the agent as stalled instead.
            let _ = ctx
                .conn
                .post::<_, serde_json::Value>(&format!("/runs/{run}/finish"), &finish)
                .await;
            Err(e)
        }
    }
}

/// Where the source's owner installs hooks: `/etc/ferry-agent/hooks`, or `FERRY_AGENT_HOOKS_DIR` (tests,
/// and owners who keep them elsewhere).
pub const HOOKS_DIR: &str = "/etc/ferry-agent/hooks";
/// How long one hook may run before it is killed and the run fails.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a failing hook's output the error keeps.
const HOOK_OUTPUT_TAIL: usize = 2048;

fn hooks_dir() -> PathBuf {
    std::env::var_os("FERRY_AGENT_HOOKS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(HOOKS_DIR), PathBuf::from)
}

/// Runs the executables in `<hooks>/pre-cutover.d/` in name order, each with [`HOOK_TIMEOUT`], logging
/// their output. A missing directory means no hooks. Files that are not executable are skipped (with a
/// warning), as run-parts does. The first failure stops the sequence.
pub async fn run_pre_cutover_hooks(
    hooks: &Path,
    cancel: &CancellationToken,
) -> Result<(), ReplicateError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = hooks.join("pre-cutover.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ReplicateError::Hook {
                name: "(directory)".into(),
                dir: dir.display().to_string(),
                status: format!("cannot list the hooks directory: {e}"),
                output_tail: String::new(),
            });
        }
    };
    let mut hooks: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    hooks.sort();
    for hook in hooks {
        let name = hook
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let executable =
            std::fs::metadata(&hook).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !executable {
            tracing::warn!(hook = %hook.display(), "pre-cutover hook is not executable: skipped");
            continue;
        }
        tracing::info!(hook = %hook.display(), "running pre-cutover hook");
        let fail = |status: String, output: &[u8]| {
            let text = String::from_utf8_lossy(output);
            let start = text
                .char_indices()
                .rev()
                .nth(HOOK_OUTPUT_TAIL)
                .map_or(0, |(i, _)| i);
            ReplicateError::Hook {
                name: name.clone(),
                dir: dir.display().to_string(),
                status,
                output_tail: text[start..].trim().to_owned(),
            }
        };
        let child = tokio::process::Command::new(&hook)
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot start it: {e}"), b""))?;
        let out = tokio::select! {
            out = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()) => out,
            () = cancel.cancelled() => return Err(ReplicateError::Stopped),
        };
        let out = match out {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(fail(format!("cannot wait for it: {e}"), b"")),
            Err(_) => {
                return Err(fail(
                    format!("timed out after {} s", HOOK_TIMEOUT.as_secs()),
                    b"",
                ));
            }
        };
        let mut output = out.stdout;
        output.extend_from_slice(&out.stderr);
        tracing::info!(hook = %name, status = %out.status, output = %String::from_utf8_lossy(&output), "pre-cutover hook ended");
        if !out.status.success() {
            use std::os::unix::process::ExitStatusExt as _;
            let status = match (out.status.code(), out.status.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => out.status.to_string(),
            };
            return Err(fail(status, &output));
        }
    }
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn throughput(c: &Counters, started: Instant) -> u64 {
    let secs = started.elapsed().as_secs_f64();
    if secs < 0.001 {
        0
    } else {
        (c.scanned.load(Ordering::Relaxed) as f64 / secs) as u64
    }
}

async fn report_progress(ctx: Arc<RunCtx>, started: Instant) {
    let path = format!("/runs/{}/progress", ctx.task.run_id);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p = ctx
            .counters
            .snapshot(started, throughput(&ctx.counters, started));
        if let Err(e) = ctx.conn.post::<_, serde_json::Value>(&path, &p).await {
            tracing::debug!(error = %e, "progress report failed");
        }
    }
}

/// Size of a disk or image file (seeking to the end works for both).
pub fn disk_size(path: &Path) -> Result<u64, ReplicateError> {
    let mut f = File::open(path).map_err(|source| ReplicateError::Open {
        path: path.to_owned(),
        source,
    })?;
    f.seek(SeekFrom::End(0))
        .map_err(|source| ReplicateError::Read {
            path: path.to_owned(),
            offset: 0,
            source,
        })
}

/// Calls `f` until it succeeds, backing off on transient errors; stops on cancellation or a permanent
/// error. A full disk on the server is shown as the run's pause reason while it lasts.
async fn retry<T, F, Fut>(ctx: &RunCtx, what: &str, mut f: F) -> Result<T, ReplicateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        if ctx.cancel.is_cancelled() {
            return Err(ReplicateError::Stopped);
        }
        match f().await {
            Ok(v) => {
                if let Ok(mut p) = ctx.counters.paused.lock() {
                    p.take();
                }
                return Ok(v);
            }
            Err(e) if e.code() == Some("RunNotActive") => return Err(ReplicateError::Stopped),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot {what} yet; retrying in {delay:?}");
                if e.code() == Some("NoSpace") {
                    if let (Ok(mut p), CallError::Api { message, .. }) =
                        (ctx.counters.paused.lock(), &e)
                    {
                        *p = Some(message.clone());
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.cancel.cancelled() => return Err(ReplicateError::Stopped),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reusable chunk buffers: allocating and zeroing a fresh 1 MiB buffer per chunk cost ~5% of the agent's
/// CPU in page faults and memset. The number of buffers alive is bounded by the run's buffer semaphore.
#[derive(Clone, Default)]
struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    fn new() -> Self {
        Self::default()
    }

    /// A buffer of exactly `len` bytes (contents unspecified: the caller overwrites them).
    fn take(&self, len: usize) -> PooledBuf {
        let mut buf = self
            .0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        buf.resize(len, 0);
        PooledBuf {
            buf,
            pool: self.clone(),
        }
    }
}

/// A buffer that goes back to its pool when dropped.
struct PooledBuf {
    buf: Vec<u8>,
    pool: BufferPool,
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Ok(mut v) = self.pool.0.lock() {
            v.push(std::mem::take(&mut self.buf));
        }
    }
}

/// What reading one chunk found.
enum Scanned {
    Zero,
    Unchanged(Digest),
    Candidate(Digest, PooledBuf),
}

struct ChunkRead {
    idx: usize,
    len: usize,
    scanned: Result<Scanned, ReplicateError>,
    _buffer: tokio::sync::OwnedSemaphorePermit,
}

async fn replicate_disk(ctx: &Arc<RunCtx>, disk: u32, path: &Path) -> Result<(), ReplicateError> {
    let run = ctx.task.run_id.clone();
    let chunk_size = ctx.task.chunk_size;
    let base = fetch_base(ctx, disk, chunk_size).await?;
    match replicate_disk_with(ctx, disk, path, base.as_ref()).await {
        Err(ReplicateError::Server(CallError::Api { code, .. }))
            if code == "IndexRejected" && base.is_some() =>
        {
            // A chunk the previous snapshot referenced is gone from the server: send the disk in full.
            tracing::warn!(%run, disk, "server lacks chunks of the previous snapshot; checking every chunk");
            replicate_disk_with(ctx, disk, path, None).await
        }
        other => other,
    }
}

async fn fetch_base(
    ctx: &RunCtx,
    disk: u32,
    chunk_size: u32,
) -> Result<Option<DiskIndex>, ReplicateError> {
    let path = format!("/runs/{}/disks/{disk}/base", ctx.task.run_id);
    let bytes = retry(ctx, "fetch the previous snapshot", || {
        ctx.conn.get_bytes(&path)
    })
    .await?;
    Ok(bytes
        .and_then(|b| DiskIndex::decode(&b).ok())
        .filter(|i| i.chunk_size == chunk_size))
}

async fn replicate_disk_with(
    ctx: &Arc<RunCtx>,
    disk: u32,
    path: &Path,
    base: Option<&DiskIndex>,
) -> Result<(), ReplicateError> {
    let size = disk_size(path)?;
    let chunk_size = ctx.task.chunk_size as u64;
    let count = size.div_ceil(chunk_size) as usize;
    let file = Arc::new(File::open(path).map_err(|source| ReplicateError::Open {
        path: path.to_owned(),
        source,
    })?);
    let base_entries: Arc<Vec<Digest>> = Arc::new(
        base.filter(|b| b.disk_size == size)
            .map(|b| b.entries.clone())
            .unwrap_or_default(),
    );
    let buffers = Arc::new(Semaphore::new((BUFFER_BUDGET / chunk_size as usize).max(8)));
    let pool = BufferPool::new();
    let io_slots = Arc::new(Semaphore::new(READS_IN_FLIGHT));
    advise_sequential(&file);
    let (tx, mut rx) = mpsc::channel::<ChunkRead>(64);

    // Reader: read + hash on the blocking pool, at most one chunk per core at a time.
    let reader = {
        let ctx = ctx.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            for idx in 0..count {
                let Ok(buffer) = buffers.clone().acquire_owned().await else {
                    return;
                };
                // Reads wait on the disk, not the CPU: they have their own permits, so that a few are
                // always queued at the device while the cores hash.
                let Ok(io) = io_slots.clone().acquire_owned().await else {
                    return;
                };
                if ctx.cancel.is_cancelled() {
                    return;
                }
                let (file, base, path, tx, pool, cpu_slots) = (
                    file.clone(),
                    base_entries.clone(),
                    path.clone(),
                    tx.clone(),
                    pool.clone(),
                    ctx.cpu.clone(),
                );
                tokio::spawn(async move {
                    let offset = idx as u64 * chunk_size;
                    let len = (size - offset).min(chunk_size) as usize;
                    let read = tokio::task::spawn_blocking(move || {
                        let r = read_chunk(&pool, &file, &path, offset, len);
                        drop(io);
                        r
                    })
                    .await
                    .unwrap_or_else(|e| Err(ReplicateError::Internal(e.to_string())));
                    let scanned = match (read, cpu_slots.acquire_owned().await) {
                        (Ok(buf), Ok(cpu)) => tokio::task::spawn_blocking(move || {
                            let r = scan_chunk(buf, base.get(idx));
                            drop(cpu);
                            r
                        })
                        .await
                        .unwrap_or_else(|e| Err(ReplicateError::Internal(e.to_string()))),
                        (Err(e), _) => Err(e),
                        (_, Err(e)) => Err(ReplicateError::Internal(e.to_string())),
                    };
                    let _ = tx
                        .send(ChunkRead {
                            idx,
                            len,
                            scanned,
                            _buffer: buffer,
                        })
                        .await;
                });
            }
        })
    };

    let mut entries = vec![Digest::ZERO; count];
    let mut uploads: JoinSet<Result<(), ReplicateError>> = JoinSet::new();
    let upload_slots = Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT));
    let mut in_flight: HashSet<Digest> = HashSet::new();
    let done_digests = Arc::new(Mutex::new(Vec::<Digest>::new()));
    let c = &ctx.counters;
    let result: Result<(), ReplicateError> = async {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MISSING_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut candidates = Vec::new();
            for r in batch {
                let len = r.len as u64;
                match r.scanned? {
                    Scanned::Zero => Counters::add(&c.zero, len),
                    Scanned::Unchanged(d) => {
                        entries[r.idx] = d;
                        Counters::add(&c.unchanged, len);
                    }
                    Scanned::Candidate(d, data) => {
                        entries[r.idx] = d;
                        candidates.push((d, data, r._buffer));
                    }
                }
                Counters::add(&c.scanned, len);
            }
            if let Ok(mut done) = done_digests.lock() {
                for d in done.drain(..) {
                    in_flight.remove(&d);
                }
            }
            // Chunks already being uploaded in this run need no question.
            candidates.retain(|(d, data, _)| {
                let dup = in_flight.contains(d);
                if dup {
                    Counters::add(&c.dedup, data.len() as u64);
                }
                !dup
            });
            if candidates.is_empty() {
                continue;
            }
            let req = MissingRequest {
                digests: candidates.iter().map(|(d, _, _)| d.to_string()).collect(),
            };
            let mpath = format!("/runs/{}/missing", ctx.task.run_id);
            let missing: MissingResponse = retry(ctx, "ask which chunks are missing", || {
                ctx.conn.post(&mpath, &req)
            })
            .await?;
            let missing: HashSet<u32> = missing.missing.into_iter().collect();
            for (k, (digest, data, buffer)) in candidates.into_iter().enumerate() {
                // Present on the server, or the same content is already on its way in this batch.
                if !missing.contains(&(k as u32)) || in_flight.contains(&digest) {
                    Counters::add(&c.dedup, data.len() as u64);
                    continue;
                }
                in_flight.insert(digest);
                let slot = upload_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| ReplicateError::Internal(e.to_string()))?;
                let (ctx, done) = (ctx.clone(), done_digests.clone());
                uploads.spawn(async move {
                    let r = upload(&ctx, digest, data).await;
                    drop((slot, buffer));
                    if let Ok(mut d) = done.lock() {
                        d.push(digest);
                    }
                    r
                });
                while let Some(done) = uploads.try_join_next() {
                    done.map_err(|e| ReplicateError::Internal(e.to_string()))??;
                }
            }
        }
        while let Some(done) = uploads.join_next().await {
            done.map_err(|e| ReplicateError::Internal(e.to_string()))??;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        ctx.cancel_pipeline(&mut uploads, reader).await;
        return result;
    }
    let _ = reader.await;
    if ctx.cancel.is_cancelled() {
        return Err(ReplicateError::Stopped);
    }
    if ctx.task.checksum {
        let (path, entries, cancel) = (path.to_owned(), entries.clone(), ctx.cancel.clone());
        tokio::task::spawn_blocking(move || {
            verify_reread(&path, disk, chunk_size, &entries, &cancel)
        })
        .await
        .map_err(|e| ReplicateError::Internal(e.to_string()))??;
        tracing::info!(
            disk,
            "checksum: a second read of the disk matches the first"
        );
    }

    let index = DiskIndex {
        disk_size: size,
        chunk_size: ctx.task.chunk_size,
        entries,
    };
    let body = Bytes::from(index.encode());
    let ipath = format!("/runs/{}/disks/{disk}/index", ctx.task.run_id);
    let committed: SnapshotCommitted = retry(ctx, "commit the disk index", || {
        ctx.conn.put(&ipath, body.clone())
    })
    .await?;
    let expected = index.root_digest().to_string();
    if committed.root_digest != expected {
        return Err(ReplicateError::Internal(format!(
            "the server committed root digest {} but the agent computed {expected}",
            committed.root_digest
        )));
    }
    tracing::info!(disk, snapshot = %committed.snapshot_id, root = %expected, "disk committed");
    Ok(())
}

impl RunCtx {
    async fn cancel_pipeline(
        &self,
        uploads: &mut JoinSet<Result<(), ReplicateError>>,
        reader: tokio::task::JoinHandle<()>,
    ) {
        reader.abort();
        uploads.abort_all();
        while uploads.join_next().await.is_some() {}
    }
}

/// Tells the kernel the disk is read front to back, so it reads ahead further.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd as _;
    let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL;
    if let Err(e) = nix::fcntl::posix_fadvise(file.as_raw_fd(), 0, 0, advice) {
        tracing::debug!(error = %e, "posix_fadvise failed; reading without the hint");
    }
}

/// The `checksum` pass: reads the disk again, chunk by chunk, and compares each chunk with the digest the
/// first read recorded (`Digest::ZERO` for an all-zero chunk). Fails at the first difference.
fn verify_reread(
    path: &Path,
    disk: u32,
    chunk_size: u64,
    entries: &[Digest],
    cancel: &CancellationToken,
) -> Result<(), ReplicateError> {
    let file = File::open(path).map_err(|source| ReplicateError::Open {
        path: path.to_owned(),
        source,
    })?;
    advise_sequential(&file);
    let size = disk_size(path)?;
    let mut buf = vec![0u8; chunk_size as usize];
    for (idx, expected) in entries.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(ReplicateError::Stopped);
        }
        let offset = idx as u64 * chunk_size;
        let len = (size.saturating_sub(offset)).min(chunk_size) as usize;
        let chunk = &mut buf[..len];
        file.read_exact_at(chunk, offset)
            .map_err(|source| ReplicateError::Read {
                path: path.to_owned(),
                offset,
                source,
            })?;
        let same = if ferry_chunk::is_zero(chunk) {
            *expected == Digest::ZERO
        } else {
            ferry_chunk::hash(chunk) == *expected
        };
        if !same {
            return Err(ReplicateError::Unstable {
                disk,
                path: path.to_owned(),
                offset,
            });
        }
    }
    Ok(())
}

fn read_chunk(
    pool: &BufferPool,
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<PooledBuf, ReplicateError> {
    let mut buf = pool.take(len);
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| ReplicateError::Read {
            path: path.to_owned(),
            offset,
            source,
        })?;
    Ok(buf)
}

fn scan_chunk(buf: PooledBuf, base: Option<&Digest>) -> Result<Scanned, ReplicateError> {
    if ferry_chunk::is_zero(&buf) {
        return Ok(Scanned::Zero);
    }
    let digest = ferry_chunk::hash(&buf);
    if base == Some(&digest) {
        return Ok(Scanned::Unchanged(digest));
    }
    Ok(Scanned::Candidate(digest, buf))
}

async fn upload(ctx: &RunCtx, digest: Digest, data: PooledBuf) -> Result<(), ReplicateError> {
    let level = ctx.level.next();
    let logical = data.len() as u64;
    let cpu = ctx
        .cpu
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ReplicateError::Internal(e.to_string()))?;
    let (blob, compress_time) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let b = ferry_chunk::encode_with_digest(&data, &digest, level);
        drop(cpu);
        (b, t.elapsed())
    })
    .await
    .map_err(|e| ReplicateError::Internal(e.to_string()))?;
    let blob = Bytes::from(blob);
    if let Some(l) = &ctx.limiter {
        l.acquire(blob.len()).await;
    }
    let path = format!("/runs/{}/chunks/{digest}", ctx.task.run_id);
    let sent_at = Instant::now();
    let _: ChunkStored = retry(ctx, "upload a chunk", || ctx.conn.put(&path, blob.clone())).await?;
    ctx.level.observe(
        level,
        logical,
        blob.len() as u64,
        compress_time,
        sent_at.elapsed(),
    );
    Counters::add(&ctx.counters.sent, blob.len() as u64);
    Counters::add(&ctx.counters.uploaded_logical, logical);
    Ok(())
}

/// Chooses the zstd level by the link's speed when the job does not fix one: compression that costs more
/// CPU time than it saves on the wire slows the run down (on a LAN or loopback, sending raw is fastest;
/// on a WAN link, compressing is). It models the time per logical byte of each candidate as
/// max(compression CPU / cores, wire bytes / link speed) from what the run measures, and picks the
/// cheapest. One chunk in `PROBE_EVERY` is compressed at level 1 whatever the choice, to keep measuring.
pub struct LevelChooser {
    fixed: Option<i32>,
    cores: f64,
    /// Known link speed (the bandwidth limit), if any.
    limit_bps: Option<f64>,
    stats: Mutex<LevelStats>,
}

#[derive(Default)]
struct LevelStats {
    chunks: u64,
    /// Level 1: logical bytes, wire bytes, CPU seconds.
    l1_logical: f64,
    l1_wire: f64,
    l1_cpu: f64,
    /// Uploads: wire bytes and seconds, as seen by one stream.
    up_wire: f64,
    up_secs: f64,
    current: i32,
}

const PROBE_EVERY: u64 = 16;

impl LevelChooser {
    pub fn new(fixed: Option<i32>, limit_bps: Option<u64>) -> Self {
        Self {
            fixed,
            cores: cpus() as f64,
            limit_bps: limit_bps.map(|l| l as f64),
            stats: Mutex::new(LevelStats {
                current: 1,
                ..LevelStats::default()
            }),
        }
    }

    /// The level for the next chunk.
    pub fn next(&self) -> i32 {
        if let Some(l) = self.fixed {
            return l;
        }
        let Ok(mut s) = self.stats.lock() else {
            return 1;
        };
        s.chunks += 1;
        if s.chunks % PROBE_EVERY == 0 {
            1
        } else {
            s.current
        }
    }

    /// Records one upload and re-decides.
    pub fn observe(&self, level: i32, logical: u64, wire: u64, cpu: Duration, upload: Duration) {
        if self.fixed.is_some() {
            return;
        }
        let Ok(mut s) = self.stats.lock() else { return };
        if level == 1 {
            s.l1_logical += logical as f64;
            s.l1_wire += wire as f64;
            s.l1_cpu += cpu.as_secs_f64();
        }
        s.up_wire += wire as f64;
        s.up_secs += upload.as_secs_f64();
        if s.l1_logical < (8 << 20) as f64 || s.up_secs <= 0.0 {
            return;
        }
        // Streams run side by side, so the link carries about UPLOADS_IN_FLIGHT times one stream's rate
        // (an overestimate when uploads are sparse, which is exactly when the link is not the limit).
        let link = self
            .limit_bps
            .unwrap_or(s.up_wire / s.up_secs * UPLOADS_IN_FLIGHT as f64);
        let ratio = s.l1_wire / s.l1_logical;
        let cpu_per_byte = s.l1_cpu / s.l1_logical;
        let raw_cost = 1.0 / link;
        let l1_cost = (cpu_per_byte / self.cores).max(ratio / link);
        // Level 3 costs about twice level 1's CPU for about 10% fewer bytes: worth it on slow links only.
        let l3_cost = (2.0 * cpu_per_byte / self.cores).max(0.9 * ratio / link);
        let best = if raw_cost <= l1_cost.min(l3_cost) {
            0
        } else if l3_cost < l1_cost {
            3
        } else {
            1
        };
        if best != s.current {
            tracing::debug!(
                level = best,
                link_mbps = link / 1e6,
                ratio,
                "compression level changed"
            );
            s.current = best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `checksum` pass accepts an unchanged disk (zero chunks included) and names the first chunk
    /// that changed after the first read.
    #[test]
    fn checksum_reread_detects_a_changed_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let chunk = 4096usize;
        let mut data = vec![0u8; 3 * chunk];
        data[..chunk].fill(7);
        data[2 * chunk..].fill(9);
        std::fs::write(&path, &data).expect("write");
        let entries: Vec<Digest> = data
            .chunks(chunk)
            .map(|c| {
                if ferry_chunk::is_zero(c) {
                    Digest::ZERO
                } else {
                    ferry_chunk::hash(c)
                }
            })
            .collect();
        let cancel = CancellationToken::new();
        verify_reread(&path, 0, chunk as u64, &entries, &cancel).expect("unchanged disk");

        // A write into the zero chunk after the first read.
        data[chunk + 10] = 1;
        std::fs::write(&path, &data).expect("rewrite");
        match verify_reread(&path, 0, chunk as u64, &entries, &cancel) {
            Err(ReplicateError::Unstable {
                offset, disk: 0, ..
            }) => assert_eq!(offset, chunk as u64),
            other => panic!("expected Unstable at offset {chunk}, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod hook_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn hook(dir: &Path, name: &str, script: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap_or_else(|e| panic!("write {name}: {e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {name}: {e}"));
    }

    #[tokio::test]
    async fn hooks_run_in_name_order_and_the_first_failure_stops_them() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let dir = tmp.path().join("pre-cutover.d");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let log = tmp.path().join("ran");
        let log_s = log.display();
        hook(
            &dir,
            "20-second",
            &format!("#!/bin/sh\necho 20 >> {log_s}\n"),
            0o755,
        );
        hook(
            &dir,
            "10-first",
            &format!("#!/bin/sh\necho 10 >> {log_s}\n"),
            0o755,
        );
        hook(&dir, "15-not-executable", "#!/bin/sh\nexit 1\n", 0o644);
        let cancel = CancellationToken::new();
        let ran = run_pre_cutover_hooks(tmp.path(), &cancel).await;
        assert!(ran.is_ok(), "{ran:?}");
        assert_eq!(
            std::fs::read_to_string(&log).ok().as_deref(),
            Some("10\n20\n")
        );

        hook(
            &dir,
            "17-fails",
            "#!/bin/sh\necho stopping app\necho 'cannot stop app' >&2\nexit 4\n",
            0o755,
        );
        std::fs::remove_file(&log).unwrap_or_else(|e| panic!("rm: {e}"));
        let err = run_pre_cutover_hooks(tmp.path(), &cancel).await.err();
        let msg = err.as_ref().map(ToString::to_string).unwrap_or_default();
        assert_eq!(err.map(|e| e.code()), Some("Hook.Failed"));
        for want in ["17-fails", "exit code 4", "stopping app", "cannot stop app"] {
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        }
        assert_eq!(
            std::fs::read_to_string(&log).ok().as_deref(),
            Some("10\n"),
            "the hooks after the failing one did not run"
        );
        // No directory: no hooks.
        let none = run_pre_cutover_hooks(&tmp.path().join("absent"), &cancel).await;
        assert!(none.is_ok(), "{none:?}");
    }
}
