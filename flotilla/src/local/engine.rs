//! [`LocalEngine`]: run attempts as local child processes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::time::Instant;

use crate::engine::{Capabilities, Engine, EngineEvent, StatusUpdate, Submitted, TaskState};
use crate::error::{Error, Result};
use crate::model::{self, Definition, Instance, Run};

use super::exit::{Ended, ExitRecord, StopCause, classify};
use super::supervisor;
use crate::artifacts::Artifacts;

/// Variables of the engine's own environment passed on to every run (when
/// set); nothing else of the parent environment is inherited. The run's
/// `env` is applied on top and may override them. `PATH` defaults to
/// `/usr/local/bin:/usr/bin:/bin` when the engine has none.
pub const DEFAULT_INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// Variable carrying the attempt number (1-based), set on every run.
pub const ENV_RUN_ATTEMPT: &str = "FLOTILLA_RUN_ATTEMPT";

const SPAWNED: &str = "spawned.json";
const EXIT: &str = "exit.json";
const OUTPUT: &str = "output.log";
const STOP: &str = "stop.json";
use crate::artifacts::{INPUT_DIR, OUTPUT_DIR};

/// Variable naming the directory holding the run's unpacked input zip.
pub const ENV_INPUT_DIR: &str = "FLOTILLA_INPUT_DIR";
/// Variable naming the directory whose files become the run's output zip.
pub const ENV_OUTPUT_DIR: &str = "FLOTILLA_OUTPUT_DIR";

/// Local engine settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where run directories go (`<data_dir>/runs/<run_id>/attempt-<n>/`).
    pub data_dir: PathBuf,
    /// How long a process may take to exit after SIGTERM (terminate,
    /// deadline) before its process group gets SIGKILL. Default 10 s.
    pub terminate_grace: Duration,
    /// At most this many processes run at once (default 1024); a submit
    /// beyond waits for a slot up to `capacity_wait`.
    pub max_processes: usize,
    /// How long a submit waits for a free slot before failing with
    /// `Unavailable` (retry later, nothing started). Default 10 s.
    pub capacity_wait: Duration,
    /// Names of the engine's environment variables passed on to runs
    /// (default [`DEFAULT_INHERITED_ENV`]).
    pub inherit_env: Vec<String>,
    /// The shell that runs commands as `<shell> -c <command>`. Default
    /// `/bin/sh`.
    pub shell: PathBuf,
    /// Capacity of the push-event channel; a subscriber that falls further
    /// behind gets [`EngineEvent::Resync`]. Default 4096.
    pub event_capacity: usize,
    /// Where inputs come from and outputs go; without it runs may not
    /// carry inputs and nothing is uploaded.
    pub artifacts: Option<Artifacts>,
}

impl LocalConfig {
    /// Defaults with run directories under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LocalConfig {
            data_dir: data_dir.into(),
            terminate_grace: Duration::from_secs(10),
            max_processes: 1024,
            capacity_wait: Duration::from_secs(10),
            inherit_env: DEFAULT_INHERITED_ENV
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            shell: PathBuf::from("/bin/sh"),
            event_capacity: 4096,
            artifacts: None,
        }
    }

    /// Sets the artifact stores: each attempt gets `input/` and `output/`
    /// directories (see [`LocalEngine`]).
    pub fn artifacts(mut self, artifacts: Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// Sets the SIGTERM → SIGKILL grace.
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = grace;
        self
    }

    /// Sets the process limit.
    pub fn max_processes(mut self, n: usize) -> Self {
        self.max_processes = n;
        self
    }
}

/// Runs commands as local processes.
///
/// - Each run attempt runs `sh -c <command>` (the run's `command`, else the
///   definition's; a run without one is rejected with `InvalidInput`) in its
///   own process group, working directory
///   `<data_dir>/runs/<run_id>/attempt-<n>/`, standard input from
///   `/dev/null`, standard output and error both appended to `output.log`
///   there. The environment is [`LocalConfig::inherit_env`] from the
///   engine's own, then the run's `env`, then `FLOTILLA_RUN_ATTEMPT=<n>`.
/// - The image is recorded in `spawned.json` and otherwise ignored
///   (`capabilities().images == false`); GPUs and ports are not supported.
/// - Submit is idempotent per `(run_id, attempt)`: an in-memory registry
///   serializes concurrent submits, and `spawned.json` (created exclusively
///   before the process starts, filled before submit returns) makes a
///   submit on a new engine object over the same directory return the
///   existing `engine_ref` (`local:<pid>`) instead of starting again.
/// - Each attempt runs under a small supervisor shell (the group's leader,
///   the `engine_ref` pid) that waits for the command and records its exit
///   status in the attempt directory, so the status survives the server.
/// - Exit: code 0 is success; another code is recorded with no failure
///   (`app_exit`), and a code above 128 names the signal it stands for (a
///   crash is the program's, not the host's); a death of the whole group
///   by a signal flotilla did not send is `exit_code = 128 + signal`,
///   failure `app_exit`, reason naming the signal; a process stopped by
///   [`Engine::terminate`] is `terminated`, one stopped for exceeding
///   `active_deadline_seconds` is `timeout`. The engine cannot tell the
///   kernel's OOM killer from another SIGKILL, so it never reports `oom`.
///   When the main process ends, whatever it left running in its process
///   group is killed, as in a container. Processes that leave the group
///   (`setsid`) are not followed.
/// - Terminate sends SIGTERM to the process group, then SIGKILL after
///   [`LocalConfig::terminate_grace`].
/// - Status changes are pushed through [`Engine::events`] (Running at
///   spawn, Stopped at exit) and recorded in `exit.json`; `poll` answers
///   from memory or, for attempts an earlier engine object started, from
///   the files (a process still alive is adopted, its pid checked against
///   its start time: watched, terminable and held to its deadline; one
///   that ended unwatched reports the status its supervisor recorded, and
///   only when there is none is it `unknown`, with a reason saying so). A
///   run whose files cannot be read gets no update in that poll (logged);
///   the others are answered.
/// - Artifacts (with [`LocalConfig::artifacts`]): each attempt gets
///   `input/` and `output/` in its directory, named by
///   `FLOTILLA_INPUT_DIR` and `FLOTILLA_OUTPUT_DIR`. The run's `input_url`
///   is fetched and unpacked (checked, see [`crate::artifacts::zip`])
///   before the process starts; a bad zip is `InvalidInput`, an
///   unreachable store `Unavailable`. After the process ends and before
///   the end is reported (and recorded in `exit.json`), a non-empty
///   `output/` is zipped and uploaded (tried twice) unless the attempt
///   failed and the run says `skip_failed_output`; the update carries
///   `output_url`. A failed upload fails a successful attempt with
///   `artifact_upload`. An attempt that ended while no engine watched it
///   is uploaded by the engine that adopts it, once: `exit.json` marks it
///   done.
/// - Dropping the engine (or stopping the program) leaves its processes
///   running; a new engine over the same directory adopts them.
/// - Its few small file operations per submit (directory, marker, log
///   file) run inline on the calling task.
/// - Only the host that started a process can observe it: on a store that
///   several replicas share, exactly one of them may run a local engine,
///   or the status leader would take the others' processes for lost. The
///   reference server enforces this with the store lease
///   `host-engine:local` (`flotilla_http::host_claim`); an embedding
///   service must do the same.
#[derive(Debug, Clone)]
pub struct LocalEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LocalConfig,
    host: Instance,
    tasks: Mutex<HashMap<Key, Arc<OnceCell<Arc<Task>>>>>,
    events: broadcast::Sender<EngineEvent>,
    slots: Arc<Semaphore>,
}

type Key = (String, u32);

/// What `spawned.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpawnRecord {
    run_id: String,
    attempt: u32,
    pid: i32,
    engine_ref: String,
    started_at: DateTime<Utc>,
    /// Start time of the process in clock ticks since boot (Linux
    /// `/proc/<pid>/stat`), to tell it from a later process with its pid.
    #[serde(default)]
    proc_start: Option<u64>,
    #[serde(default)]
    deadline_at: Option<DateTime<Utc>>,
    #[serde(default)]
    deadline_seconds: Option<i64>,
    command: String,
    image: String,
    /// The OS process that started it.
    engine_pid: u32,
    /// It has `input/` and `output/`, and its output is uploaded.
    #[serde(default)]
    artifacts: bool,
    /// A failed attempt's output is not uploaded.
    #[serde(default)]
    skip_failed_output: bool,
}

#[derive(Debug)]
struct Task {
    spawn: SpawnRecord,
    dir: PathBuf,
    state: Mutex<TaskInner>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct TaskInner {
    cause: Option<StopCause>,
    exit: Option<ExitRecord>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Task {
    fn exit(&self) -> Option<ExitRecord> {
        lock(&self.state).exit.clone()
    }

    /// Records why flotilla stops it (the first reason wins; also in
    /// `stop.json`) and wakes the watcher. False when it already ended.
    fn request_stop(&self, cause: StopCause) -> bool {
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() {
                return false;
            }
            if st.cause.is_none() {
                let path = self.dir.join(STOP);
                if !path.exists()
                    && let Err(e) = write_json_atomic(&path, &cause)
                {
                    tracing::warn!(error = %e, "recording a stop request failed");
                }
                st.cause = Some(cause);
            }
        }
        self.wake.notify_one();
        true
    }

    /// Why flotilla stops it, if it does: asked of this engine object or,
    /// through `stop.json`, of another on the same directory.
    fn cause(&self) -> Option<StopCause> {
        let mine = lock(&self.state).cause.clone();
        mine.or_else(|| {
            let body = std::fs::read(self.dir.join(STOP)).ok()?;
            serde_json::from_slice(&body).ok()
        })
    }

    fn update(&self, host: &Instance) -> StatusUpdate {
        let mut u = StatusUpdate::new(&self.spawn.run_id, self.spawn.attempt, TaskState::Running);
        u.started_at = Some(self.spawn.started_at);
        u.instance = Some(host.clone());
        if let Some(exit) = self.exit() {
            u.state = TaskState::Stopped;
            u.exit_code = exit.exit_code;
            u.reason = exit.reason;
            u.failure = exit.failure;
            u.finished_at = Some(exit.finished_at);
            u.output_url = exit.output_url;
        }
        u
    }
}

impl LocalEngine {
    /// An engine keeping run directories under `data_dir`, with default
    /// settings.
    pub fn new(data_dir: PathBuf) -> Result<Self> {
        Self::with_config(LocalConfig::new(data_dir))
    }

    /// An engine with `config`; creates the data directory. A relative
    /// `data_dir` is taken from the current directory, once: the paths a
    /// job is given (`FLOTILLA_INPUT_DIR`, `FLOTILLA_OUTPUT_DIR`) are
    /// absolute, since the job runs in its own attempt directory.
    pub fn with_config(mut config: LocalConfig) -> Result<Self> {
        if config.max_processes == 0 {
            return Err(Error::invalid("max_processes: must be at least 1"));
        }
        config.data_dir = crate::artifacts::absolute_data_dir(&config.data_dir)?;
        std::fs::create_dir_all(config.data_dir.join("runs")).map_err(|e| {
            Error::internal(format!(
                "data_dir: cannot create {}: {e}",
                config.data_dir.display()
            ))
            .with_source(e)
        })?;
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let slots = Arc::new(Semaphore::new(
            config.max_processes.min(Semaphore::MAX_PERMITS),
        ));
        Ok(LocalEngine {
            inner: Arc::new(Inner {
                host: Instance {
                    instance_id: host_name.clone(),
                    dns_name: host_name,
                },
                config,
                tasks: Mutex::new(HashMap::new()),
                events,
                slots,
            }),
        })
    }

    /// Settings.
    pub fn config(&self) -> &LocalConfig {
        &self.inner.config
    }

    /// The directory of one attempt: `<data_dir>/runs/<run_id>/attempt-<n>`.
    /// A run id that is not a safe file name (`[A-Za-z0-9._-]`, at most 200
    /// characters, not `.` or `..`) is `InvalidInput`.
    pub fn attempt_dir(&self, run_id: &str, attempt: u32) -> Result<PathBuf> {
        check_run_id(run_id)?;
        if attempt == 0 {
            return Err(Error::invalid("attempt: attempts count from 1"));
        }
        Ok(self
            .inner
            .config
            .data_dir
            .join("runs")
            .join(run_id)
            .join(format!("attempt-{attempt}")))
    }

    /// The output file of one attempt (`<attempt dir>/output.log`).
    pub fn log_path(&self, run_id: &str, attempt: u32) -> Result<PathBuf> {
        Ok(self.attempt_dir(run_id, attempt)?.join(OUTPUT))
    }

    /// How many processes this engine object watches right now.
    pub fn running(&self) -> usize {
        self.inner.config.max_processes.min(Semaphore::MAX_PERMITS)
            - self.inner.slots.available_permits()
    }

    /// The task of an attempt: in memory, or adopted from the files an
    /// earlier engine object left. `None` when it was never started.
    async fn lookup(&self, run_id: &str, attempt: u32) -> Result<Option<Arc<Task>>> {
        let key = (run_id.to_string(), attempt);
        let existing = lock(&self.inner.tasks).get(&key).cloned();
        if let Some(cell) = &existing
            && let Some(task) = cell.get()
        {
            return Ok(Some(task.clone()));
        }
        let dir = self.attempt_dir(run_id, attempt)?;
        if !dir.join(SPAWNED).exists() {
            return Ok(None);
        }
        let cell = cell_for(&self.inner, &key);
        let task = cell
            .get_or_try_init(|| adopt(self.inner.clone(), key.clone(), dir))
            .await?
            .clone();
        if task.exit().is_some() {
            forget(&self.inner, &key, &cell);
        }
        Ok(Some(task))
    }
}

fn check_run_id(run_id: &str) -> Result<()> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 200
        && run_id != "."
        && run_id != ".."
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "run_id: '{run_id}' cannot name a local run directory (use 1-200 of A-Z a-z 0-9 . _ -)"
        )))
    }
}

fn cell_for(inner: &Inner, key: &Key) -> Arc<OnceCell<Arc<Task>>> {
    lock(&inner.tasks).entry(key.clone()).or_default().clone()
}

/// Drops a finished task from memory (its files answer from now on).
fn forget(inner: &Inner, key: &Key, cell: &Arc<OnceCell<Arc<Task>>>) {
    let mut tasks = lock(&inner.tasks);
    if tasks.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
        tasks.remove(key);
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    let msg = format!("{what} {}: {e}", path.display());
    let err = match e.kind() {
        std::io::ErrorKind::InvalidInput => Error::invalid(msg),
        std::io::ErrorKind::WouldBlock
        | std::io::ErrorKind::OutOfMemory
        | std::io::ErrorKind::ResourceBusy
        | std::io::ErrorKind::StorageFull
        | std::io::ErrorKind::QuotaExceeded => Error::unavailable(msg),
        _ => Error::internal(msg),
    };
    err.with_source(e)
}

/// Writes `value` as JSON to `path` atomically (temporary file + rename).
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::internal(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(&tmp, body).map_err(|e| io_error("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error("renaming to", path, e))
}

fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let body = std::fs::read(dir.join(EXIT)).ok()?;
    serde_json::from_slice(&body).ok()
}

/// `(state, start time)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 of the file; `state` was field 3.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `pid` (started at `start`, if known) still runs.
fn alive(pid: i32, start: Option<u64>) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    match proc_stat(pid) {
        Some((state, started)) => !matches!(state, 'Z' | 'X') && start.is_none_or(|s| s == started),
        None => false,
    }
}

fn signal_group(pgid: i32, sig: Signal) {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, signal = %sig, error = %e, "signalling a run's process group failed")
        }
    }
}

fn emit(inner: &Inner, u: StatusUpdate) {
    // No subscriber is fine: polls answer the same.
    let _ = inner.events.send(EngineEvent::Update(u));
}

/// Starts the attempt, or adopts it when its marker exists already.
async fn start_or_adopt(
    inner: Arc<Inner>,
    key: Key,
    run: Run,
    def: Definition,
) -> Result<Arc<Task>> {
    let dir = PathBuf::from(&inner.config.data_dir)
        .join("runs")
        .join(&key.0)
        .join(format!("attempt-{}", key.1));
    let marker = dir.join(SPAWNED);
    if marker.exists() {
        return adopt(inner, key, dir).await;
    }
    let command = run
        .command
        .as_deref()
        .or(def.command.as_deref())
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::invalid(
                "command: the local engine runs a shell command and the run has none (it ignores images, so there is no image default)",
            )
        })?
        .to_string();
    let deadline_seconds = match run.active_deadline_seconds {
        Some(s) if s <= 0 => {
            return Err(Error::invalid(format!(
                "active_deadline_seconds: must be positive, got {s}"
            )));
        }
        other => other,
    };
    let permit = tokio::time::timeout(
        inner.config.capacity_wait,
        inner.slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| {
        Error::unavailable(format!(
            "the local engine runs its limit of {} processes; try again later",
            inner.config.max_processes
        ))
    })?
    .map_err(|_| Error::internal("the local engine's process limit was closed"))?;

    std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
    let staged = stage_input(&inner, &run, &dir).await?;
    let mut marker_file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            drop(permit);
            crate::artifacts::discard_staged(staged.as_deref());
            return adopt(inner, key, dir).await;
        }
        Err(e) => {
            crate::artifacts::discard_staged(staged.as_deref());
            return Err(io_error("creating", &marker, e));
        }
    };
    if let Err(e) = place_io_dirs(&inner, &dir, staged.as_deref()) {
        drop(marker_file);
        let _ = std::fs::remove_file(&marker);
        return Err(e);
    }
    match spawn(
        &inner,
        &key,
        &run,
        &def,
        &dir,
        &command,
        deadline_seconds,
        permit,
    ) {
        Ok((task, child, permit)) => {
            let body = serde_json::to_vec_pretty(&task.spawn)
                .map_err(|e| Error::internal(format!("encoding {SPAWNED}: {e}")));
            let written = body.and_then(|b| {
                marker_file
                    .write_all(&b)
                    .and_then(|()| marker_file.flush())
                    .map_err(|e| io_error("writing", &marker, e))
            });
            if let Err(e) = written {
                // The process runs; losing the marker only weakens
                // idempotence across engine objects.
                tracing::error!(run_id = %key.0, attempt = key.1, error = %e, "recording the spawned process failed");
            }
            emit(&inner, task.update(&inner.host));
            tokio::spawn(watch_child(inner.clone(), key, task.clone(), child, permit));
            Ok(task)
        }
        Err(e) => {
            drop(marker_file);
            let _ = std::fs::remove_file(&marker);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn(
    inner: &Inner,
    key: &Key,
    run: &Run,
    def: &Definition,
    dir: &Path,
    command: &str,
    deadline_seconds: Option<i64>,
    permit: OwnedSemaphorePermit,
) -> Result<(Arc<Task>, tokio::process::Child, OwnedSemaphorePermit)> {
    let log_path = dir.join(OUTPUT);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error("opening", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| io_error("duplicating", &log_path, e))?;
    let mut cmd = supervisor::command(&inner.config.shell, command);
    cmd.current_dir(dir)
        .env_clear()
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    for name in &inner.config.inherit_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    for var in &run.env {
        cmd.env(&var.name, &var.value);
    }
    cmd.env(ENV_RUN_ATTEMPT, key.1.to_string());
    let artifacts = inner.config.artifacts.is_some();
    if artifacts {
        cmd.env(ENV_INPUT_DIR, dir.join(INPUT_DIR));
        cmd.env(ENV_OUTPUT_DIR, dir.join(OUTPUT_DIR));
    }
    let child = cmd
        .spawn()
        .map_err(|e| io_error("starting", &inner.config.shell, e))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| Error::internal("the started process has no pid"))?;
    let started_at = model::now();
    let deadline_at = deadline_seconds
        .map(|s| started_at + chrono::TimeDelta::seconds(s.min(i64::from(i32::MAX))));
    let spawn = SpawnRecord {
        run_id: key.0.clone(),
        attempt: key.1,
        pid,
        engine_ref: format!("local:{pid}"),
        started_at,
        proc_start: proc_stat(pid).map(|(_, s)| s),
        deadline_at,
        deadline_seconds,
        command: command.to_string(),
        image: if run.image.is_empty() {
            def.image.clone()
        } else {
            run.image.clone()
        },
        engine_pid: std::process::id(),
        artifacts,
        skip_failed_output: run.skip_failed_output,
    };
    tracing::debug!(run_id = %key.0, attempt = key.1, pid, "started local process");
    let task = Arc::new(Task {
        spawn,
        dir: dir.to_path_buf(),
        state: Mutex::new(TaskInner::default()),
        wake: tokio::sync::Notify::new(),
    });
    Ok((task, child, permit))
}

/// Fetches and unpacks the run's input beside the attempt's directory
/// (renamed into place once the attempt is ours); `None` without one.
async fn stage_input(inner: &Inner, run: &Run, dir: &Path) -> Result<Option<PathBuf>> {
    match (&inner.config.artifacts, &run.input_url) {
        (_, None) => Ok(None),
        (None, Some(_)) => Err(Error::invalid(
            "input_url: the local engine has no artifact store configured",
        )),
        (Some(a), Some(url)) => a.stage_input_dir(dir, Some(url)).await,
    }
}

fn place_io_dirs(inner: &Inner, dir: &Path, staged: Option<&Path>) -> Result<()> {
    match &inner.config.artifacts {
        Some(_) => Artifacts::place_io_dirs(dir, staged),
        None => Ok(()),
    }
}

/// Uploads what the attempt left in `output/` (see [`LocalEngine`]),
/// recording the URL, or the failure, in its exit.
async fn upload_output(inner: &Inner, task: &Task, mut exit: ExitRecord) -> ExitRecord {
    let Some(artifacts) = &inner.config.artifacts else {
        return exit;
    };
    if !task.spawn.artifacts {
        return exit;
    }
    exit.output_url = artifacts
        .upload_attempt(
            &task.dir,
            (&task.spawn.run_id, task.spawn.attempt),
            task.spawn.skip_failed_output,
            &mut exit.failure,
            &mut exit.reason,
            exit.exit_code,
        )
        .await;
    exit
}

/// Adopts an attempt started by another engine object from its files.
async fn adopt(inner: Arc<Inner>, key: Key, dir: PathBuf) -> Result<Arc<Task>> {
    let marker = dir.join(SPAWNED);
    // The starter fills the marker right after the process starts.
    let give_up = Instant::now() + Duration::from_secs(5);
    let spawn: SpawnRecord = loop {
        match tokio::fs::read(&marker).await {
            Ok(body) => {
                if let Ok(rec) = serde_json::from_slice::<SpawnRecord>(&body) {
                    break rec;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::unavailable(format!(
                    "run {} attempt {} is being started by another engine; try again",
                    key.0, key.1
                )));
            }
            Err(e) => return Err(io_error("reading", &marker, e)),
        }
        if Instant::now() > give_up {
            return Err(Error::internal(format!(
                "run {} attempt {}: {} stayed incomplete; whoever started it stopped half-way, so its process state is unknown",
                key.0,
                key.1,
                marker.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if spawn.run_id != key.0 || spawn.attempt != key.1 {
        return Err(Error::internal(format!(
            "{} belongs to run {} attempt {}",
            marker.display(),
            spawn.run_id,
            spawn.attempt
        )));
    }
    let task = Arc::new(Task {
        spawn,
        dir: dir.clone(),
        state: Mutex::new(TaskInner::default()),
        wake: tokio::sync::Notify::new(),
    });
    if let Some(exit) = read_exit(&dir) {
        lock(&task.state).exit = Some(exit);
        return Ok(task);
    }
    if alive(task.spawn.pid, task.spawn.proc_start) {
        tracing::info!(run_id = %key.0, attempt = key.1, pid = task.spawn.pid, "adopted a running local process");
        tokio::spawn(watch_adopted(inner, key, task.clone()));
        return Ok(task);
    }
    let exit = ended_unwatched(&inner, &task).await;
    lock(&task.state).exit = Some(exit);
    Ok(task)
}

/// The exit record of a process that ended while no watcher of this
/// engine object held it. An engine object in this OS process may still
/// be writing its record, so wait for it a little first.
async fn ended_unwatched(inner: &Inner, task: &Task) -> ExitRecord {
    let wait = if task.spawn.engine_pid == std::process::id() {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let give_up = Instant::now() + wait;
    loop {
        if let Some(exit) = read_exit(&task.dir) {
            return exit;
        }
        if Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = match supervisor::read_status(&task.dir) {
        Some(status) => Ended::Status(status),
        None => Ended::Unknown(format!(
            "process {} ended while no flotilla engine was watching it and left no exit status ({} is missing); its fate is unknown",
            task.spawn.pid,
            supervisor::STATUS
        )),
    };
    let exit = upload_output(inner, task, classify(ended, task.cause())).await;
    if read_exit(&task.dir).is_none()
        && let Err(e) = write_json_atomic(&task.dir.join(EXIT), &exit)
    {
        tracing::warn!(error = %e, "recording an unwatched exit failed");
    }
    exit
}

fn deadline_instant(spawn: &SpawnRecord) -> Option<Instant> {
    let at = spawn.deadline_at?;
    let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

fn timeout_reason(spawn: &SpawnRecord) -> String {
    match spawn.deadline_seconds {
        Some(s) => format!("exceeded active_deadline_seconds ({s} s)"),
        None => "exceeded its deadline".to_string(),
    }
}

/// Sends the stop signals: TERM now, KILL after the grace.
struct Stopper {
    pgid: i32,
    grace: Duration,
    kill_at: Option<Instant>,
    termed: bool,
}

impl Stopper {
    fn term(&mut self) {
        if !self.termed {
            self.termed = true;
            signal_group(self.pgid, Signal::SIGTERM);
            self.kill_at = Some(Instant::now() + self.grace);
        }
    }

    fn kill(&mut self) {
        signal_group(self.pgid, Signal::SIGKILL);
        self.kill_at = None;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches a child this engine object started until it ends.
async fn watch_child(
    inner: Arc<Inner>,
    key: Key,
    task: Arc<Task>,
    mut child: tokio::process::Child,
    permit: OwnedSemaphorePermit,
) {
    let mut stopper = Stopper {
        pgid: task.spawn.pid,
        grace: inner.config.terminate_grace,
        kill_at: None,
        termed: false,
    };
    let mut deadline = deadline_instant(&task.spawn);
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            _ = task.wake.notified() => stopper.term(),
            _ = sleep_until_opt(deadline) => {
                deadline = None;
                task.request_stop(StopCause::Timeout(timeout_reason(&task.spawn)));
            }
            _ = sleep_until_opt(stopper.kill_at) => stopper.kill(),
        }
    };
    // Whatever the command left in its group goes with it.
    signal_group(task.spawn.pid, Signal::SIGKILL);
    drop(permit);
    let ended = match (supervisor::read_status(&task.dir), status) {
        (Some(recorded), _) => Ended::Status(recorded),
        (None, Ok(st)) => match (st.signal(), st.code()) {
            (Some(sig), _) => Ended::Signal(sig),
            // The supervisor exited without recording (it could not write).
            (None, Some(code)) => Ended::Status(i64::from(code)),
            (None, None) => Ended::Unknown("the process ended with no exit status".to_string()),
        },
        (None, Err(e)) => {
            tracing::warn!(run_id = %key.0, error = %e, "waiting for a local process failed");
            Ended::Unknown(format!("waiting for the process failed: {e}"))
        }
    };
    let exit = upload_output(&inner, &task, classify(ended, task.cause())).await;
    finish(&inner, &key, &task, exit);
}

/// Watches a process adopted from an earlier engine object (not our
/// child: its exit status is unknown unless its own watcher records it).
async fn watch_adopted(inner: Arc<Inner>, key: Key, task: Arc<Task>) {
    let mut stopper = Stopper {
        pgid: task.spawn.pid,
        grace: inner.config.terminate_grace,
        kill_at: None,
        termed: false,
    };
    let mut deadline = deadline_instant(&task.spawn);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if read_exit(&task.dir).is_some()
                    || supervisor::read_status(&task.dir).is_some()
                    || !alive(task.spawn.pid, task.spawn.proc_start)
                {
                    break;
                }
            }
            _ = task.wake.notified() => stopper.term(),
            _ = sleep_until_opt(deadline) => {
                deadline = None;
                task.request_stop(StopCause::Timeout(timeout_reason(&task.spawn)));
            }
            _ = sleep_until_opt(stopper.kill_at) => stopper.kill(),
        }
    }
    signal_group(task.spawn.pid, Signal::SIGKILL);
    let exit = ended_unwatched(&inner, &task).await;
    finish(&inner, &key, &task, exit);
}

/// Records the exit (memory, `exit.json`), pushes Stopped and drops the
/// task from memory.
fn finish(inner: &Inner, key: &Key, task: &Arc<Task>, exit: ExitRecord) {
    if let Err(e) = write_json_atomic(&task.dir.join(EXIT), &exit) {
        tracing::warn!(run_id = %key.0, attempt = key.1, error = %e, "recording an exit failed");
    }
    lock(&task.state).exit = Some(exit);
    emit(inner, task.update(&inner.host));
    let mut tasks = lock(&inner.tasks);
    if tasks
        .get(key)
        .and_then(|c| c.get())
        .is_some_and(|t| Arc::ptr_eq(t, task))
    {
        tasks.remove(key);
    }
}

#[async_trait]
impl Engine for LocalEngine {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpu: false,
            ports: false,
            logs: true,
            deadline: true,
            push_events: true,
            images: false,
            artifacts: self.inner.config.artifacts.is_some(),
        }
    }

    fn default_capacity(&self) -> Option<crate::model::Capacity> {
        Some(crate::model::Capacity::host())
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted> {
        check_run_id(&run.run_id)?;
        if run.attempt == 0 {
            return Err(Error::invalid("attempt: attempts count from 1"));
        }
        let key = (run.run_id.clone(), run.attempt);
        let cell = cell_for(&self.inner, &key);
        let task = cell
            .get_or_try_init(|| {
                start_or_adopt(
                    self.inner.clone(),
                    key.clone(),
                    run.clone(),
                    definition.clone(),
                )
            })
            .await;
        let task = match task {
            Ok(t) => t.clone(),
            Err(e) => {
                forget(&self.inner, &key, &cell);
                return Err(e);
            }
        };
        if task.exit().is_some() {
            forget(&self.inner, &key, &cell);
        }
        Ok(Submitted {
            engine_ref: task.spawn.engine_ref.clone(),
            instance: Some(self.inner.host.clone()),
        })
    }

    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>> {
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let u = match self.lookup(&run.run_id, run.attempt).await {
                Ok(Some(task)) => task.update(&self.inner.host),
                Ok(None) => StatusUpdate::new(&run.run_id, run.attempt, TaskState::Missing),
                Err(e) if e.kind() == crate::ErrorKind::InvalidInput => {
                    // Not a run this engine could have started.
                    StatusUpdate::new(&run.run_id, run.attempt, TaskState::Missing)
                }
                Err(e) => {
                    // One run's trouble (an unreadable directory, a broken
                    // marker) must not blind the others: it gets no update
                    // this time, and the next poll asks again.
                    tracing::warn!(run_id = %run.run_id, attempt = run.attempt, error = %e, "observing a local run failed");
                    continue;
                }
            };
            out.push(u);
        }
        Ok(out)
    }

    async fn terminate(&self, run: &Run, reason: &str) -> Result<()> {
        if check_run_id(&run.run_id).is_err() || run.attempt == 0 {
            return Ok(());
        }
        if let Some(task) = self.lookup(&run.run_id, run.attempt).await? {
            task.request_stop(StopCause::Terminated(reason.to_string()));
        }
        Ok(())
    }

    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        Some(EngineEvent::broadcast_stream(self.inner.events.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::logs::LogSource;
    use crate::model::{EnvVar, FailureCategory, NewDefinition, RunStatus};
    use futures::StreamExt;

    const LIMIT: Duration = Duration::from_secs(30);

    fn new_run(command: &str) -> (Run, Definition) {
        let def = NewDefinition::new("local-test", "ignored:latest")
            .command(command)
            .into_definition();
        let mut run = Run::queued(&def, "default", "local", "tester");
        run.env = vec![
            EnvVar::new("FLOTILLA_RUN_ID", run.run_id.clone()),
            EnvVar::new("GREETING", "grüß dich"),
        ];
        (run, def)
    }

    fn engine(dir: &Path) -> LocalEngine {
        LocalEngine::with_config(LocalConfig::new(dir).terminate_grace(Duration::from_millis(300)))
            .expect("engine")
    }

    async fn wait_stopped(engine: &LocalEngine, run: &Run) -> StatusUpdate {
        let give_up = Instant::now() + LIMIT;
        loop {
            let u = engine.poll(std::slice::from_ref(run)).await.expect("poll");
            if u[0].state == TaskState::Stopped {
                return u[0].clone();
            }
            assert!(Instant::now() < give_up, "run never stopped: {:?}", u[0]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_file(path: &Path, needle: &str) {
        let give_up = Instant::now() + LIMIT;
        loop {
            if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "{} never held {needle:?}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(engine: &LocalEngine, run: &Run) -> String {
        std::fs::read_to_string(engine.log_path(&run.run_id, run.attempt).expect("path"))
            .expect("output.log")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn success_with_log_text_and_a_clean_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let mut events = engine.events().expect("push events");
        let (run, def) = new_run(
            "echo \"hello $GREETING\"; echo to-stderr >&2; \
             echo \"attempt=$FLOTILLA_RUN_ATTEMPT id=$FLOTILLA_RUN_ID\"; \
             echo \"manifest=${CARGO_MANIFEST_DIR:-unset}\"; pwd",
        );
        let s = engine.submit(&run, &def).await.expect("submit");
        assert!(s.engine_ref.starts_with("local:"), "{}", s.engine_ref);
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.exit_code, Some(0));
        assert_eq!(u.failure, None);
        assert!(u.started_at.is_some() && u.finished_at.is_some());
        let text = output(&engine, &run);
        assert!(text.contains("hello grüß dich\n"), "{text}");
        assert!(text.contains("to-stderr\n"), "{text}");
        assert!(
            text.contains(&format!("attempt=1 id={}", run.run_id)),
            "{text}"
        );
        // cargo sets CARGO_MANIFEST_DIR for the test process; runs don't inherit it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(text.contains("manifest=unset"), "{text}");
        let dir_of_attempt = engine.attempt_dir(&run.run_id, 1).expect("dir");
        assert!(text.contains("attempt-1\n"), "{text}");
        let exit: ExitRecord =
            serde_json::from_slice(&std::fs::read(dir_of_attempt.join(EXIT)).expect("exit.json"))
                .expect("exit record");
        assert_eq!(exit.exit_code, Some(0));
        // Running at spawn, Stopped at exit, on the push stream.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(LIMIT, events.next())
                .await
                .expect("event")
            {
                Some(EngineEvent::Update(u)) if u.run_id == run.run_id => seen.push(u.state),
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        assert_eq!(seen, vec![TaskState::Running, TaskState::Stopped]);
        // The log source reads the same text.
        let source = crate::local::LocalLogSource::new(Arc::new(engine.clone()));
        let mut stopped = run.clone();
        stopped.status = RunStatus::Stopped;
        let chunk = source.read(&stopped, None, 1 << 20).await.expect("read");
        assert_eq!(chunk.log, text);
        assert!(chunk.complete);
    }

    #[tokio::test]
    async fn non_zero_exit_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let (run, def) = new_run("echo failing; exit 3");
        engine.submit(&run, &def).await.expect("submit");
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.exit_code, Some(3));
        assert_eq!(u.failure, None, "app_exit is the service's call");
        assert_eq!(u.reason.as_deref(), Some("exited with code 3"));
    }

    #[tokio::test]
    async fn terminate_stops_sleep_and_reaches_grandchildren() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let (run, def) = new_run("sleep 60 & echo $! > bg.pid; echo ready; wait");
        engine.submit(&run, &def).await.expect("submit");
        let adir = engine.attempt_dir(&run.run_id, 1).expect("dir");
        wait_for_file(&adir.join(OUTPUT), "ready").await;
        let bg: i32 = std::fs::read_to_string(adir.join("bg.pid"))
            .expect("bg.pid")
            .trim()
            .parse()
            .expect("pid");
        engine
            .terminate(&run, "terminated by tester")
            .await
            .expect("terminate");
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.failure, Some(FailureCategory::Terminated));
        assert_eq!(u.reason.as_deref(), Some("terminated by tester"));
        let give_up = Instant::now() + LIMIT;
        while alive(bg, None) {
            assert!(Instant::now() < give_up, "the background sleep survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Terminating again, or an unknown run, is fine.
        engine
            .terminate(&run, "again")
            .await
            .expect("terminate again");
        let (unknown, _) = new_run("true");
        engine
            .terminate(&unknown, "nobody")
            .await
            .expect("terminate unknown");
    }

    #[tokio::test]
    async fn terminate_kills_a_process_that_ignores_term() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Grace enough for the shell to run its trap even on a busy host.
        let engine = LocalEngine::with_config(
            LocalConfig::new(dir.path()).terminate_grace(Duration::from_secs(3)),
        )
        .expect("engine");
        let (run, def) =
            new_run("trap 'echo got TERM' TERM; echo ready; while :; do sleep 1; done");
        engine.submit(&run, &def).await.expect("submit");
        let adir = engine.attempt_dir(&run.run_id, 1).expect("dir");
        wait_for_file(&adir.join(OUTPUT), "ready").await;
        engine
            .terminate(&run, "terminated by tester")
            .await
            .expect("terminate");
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.failure, Some(FailureCategory::Terminated));
        assert_eq!(u.exit_code, Some(128 + 9), "SIGKILL after the grace: {u:?}");
        assert!(
            output(&engine, &run).contains("got TERM"),
            "TERM came first"
        );
    }

    #[tokio::test]
    async fn deadline_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let (mut run, def) = new_run("sleep 60");
        run.active_deadline_seconds = Some(1);
        engine.submit(&run, &def).await.expect("submit");
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.failure, Some(FailureCategory::Timeout), "{u:?}");
        assert!(
            u.reason
                .as_deref()
                .is_some_and(|r| r.contains("active_deadline_seconds")),
            "{u:?}"
        );
        let (mut bad, def) = new_run("true");
        bad.active_deadline_seconds = Some(0);
        let e = engine.submit(&bad, &def).await.expect_err("zero deadline");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("active_deadline_seconds"));
    }

    #[tokio::test]
    async fn a_crash_is_an_app_exit_naming_the_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        for (sig, name) in [
            ("SEGV", "SIGSEGV"),
            ("ABRT", "SIGABRT"),
            ("KILL", "SIGKILL"),
        ] {
            let (run, def) = new_run(&format!("kill -{sig} $$"));
            engine.submit(&run, &def).await.expect("submit");
            let u = wait_stopped(&engine, &run).await;
            assert!(
                matches!(u.failure, None | Some(FailureCategory::AppExit)),
                "a crash is app_exit, not an infrastructure fault: {u:?}"
            );
            assert!(u.exit_code.is_some_and(|c| c > 128), "{u:?}");
            assert!(
                u.reason.as_deref().is_some_and(|r| r.contains(name)),
                "the reason names the signal: {u:?}"
            );
        }
        // The whole group killed by someone else (not flotilla).
        let (run, def) = new_run("echo ready; sleep 60");
        let s = engine.submit(&run, &def).await.expect("submit");
        let adir = engine.attempt_dir(&run.run_id, 1).expect("dir");
        wait_for_file(&adir.join(OUTPUT), "ready").await;
        let pgid: i32 = s
            .engine_ref
            .trim_start_matches("local:")
            .parse()
            .expect("pid");
        signal_group(pgid, Signal::SIGKILL);
        let u = wait_stopped(&engine, &run).await;
        assert_eq!(u.failure, Some(FailureCategory::AppExit), "{u:?}");
        assert_eq!(u.exit_code, Some(137));
        assert!(
            u.reason.as_deref().is_some_and(|r| r.contains("SIGKILL")),
            "{u:?}"
        );
    }

    #[tokio::test]
    async fn one_unreadable_run_does_not_fail_the_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let (good, def) = new_run("exit 0");
        engine.submit(&good, &def).await.expect("submit");
        wait_stopped(&engine, &good).await;
        // A run whose marker cannot be read (a directory where the file
        // should be; permissions do not stop root).
        let (bad, _) = new_run("true");
        let bad_dir = engine.attempt_dir(&bad.run_id, 1).expect("dir");
        std::fs::create_dir_all(bad_dir.join(SPAWNED)).expect("mkdir");
        let (never, _) = new_run("true");
        let u = engine
            .poll(&[bad.clone(), good.clone(), never.clone()])
            .await
            .expect("one bad run must not fail the batch");
        let ids: Vec<&str> = u.iter().map(|u| u.run_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![good.run_id.as_str(), never.run_id.as_str()],
            "{u:?}"
        );
        assert_eq!(u[0].state, TaskState::Stopped);
        assert_eq!(u[1].state, TaskState::Missing);
    }

    #[tokio::test]
    async fn bad_submissions_are_invalid_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let (mut run, mut def) = new_run("true");
        run.command = None;
        def.command = None;
        let e = engine.submit(&run, &def).await.expect_err("no command");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("command:"), "{}", e.message());
        let (mut run, def) = new_run("true");
        run.run_id = "../escape".into();
        let e = engine.submit(&run, &def).await.expect_err("bad id");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("run_id:"), "{}", e.message());
        let u = engine.poll(&[run]).await.expect("poll");
        assert_eq!(u[0].state, TaskState::Missing);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resubmit_after_recreating_the_engine_starts_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A running attempt.
        let first = engine(dir.path());
        let (run, def) = new_run("echo x >> ../starts; echo ready; sleep 60");
        let a = first.submit(&run, &def).await.expect("submit");
        let (a2, a3) = futures::join!(first.submit(&run, &def), first.submit(&run, &def));
        assert_eq!(a2.expect("submit").engine_ref, a.engine_ref);
        assert_eq!(a3.expect("submit").engine_ref, a.engine_ref);
        let adir = first.attempt_dir(&run.run_id, 1).expect("dir");
        wait_for_file(&adir.join(OUTPUT), "ready").await;
        // A finished attempt.
        let (done, done_def) = new_run("echo y >> ../starts");
        let d = first.submit(&done, &done_def).await.expect("submit");
        assert_eq!(wait_stopped(&first, &done).await.exit_code, Some(0));
        drop(first);

        let second = engine(dir.path());
        let b = second.submit(&run, &def).await.expect("resubmit");
        assert_eq!(b.engine_ref, a.engine_ref, "same process, same ref");
        let u = second.poll(std::slice::from_ref(&run)).await.expect("poll");
        assert_eq!(u[0].state, TaskState::Running);
        let e = second
            .submit(&done, &done_def)
            .await
            .expect("resubmit finished");
        assert_eq!(e.engine_ref, d.engine_ref);
        let u = wait_stopped(&second, &done).await;
        assert_eq!(u.exit_code, Some(0), "answered from exit.json");

        // The new engine object can stop what the old one started.
        let mut events = second.events().expect("events");
        second
            .terminate(&run, "terminated after restart")
            .await
            .expect("terminate");
        let u = wait_stopped(&second, &run).await;
        assert_eq!(u.failure, Some(FailureCategory::Terminated), "{u:?}");
        loop {
            match tokio::time::timeout(LIMIT, events.next())
                .await
                .expect("event")
            {
                Some(EngineEvent::Update(u))
                    if u.run_id == run.run_id && u.state == TaskState::Stopped =>
                {
                    break;
                }
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        let third = engine(dir.path());
        assert_eq!(
            wait_stopped(&third, &run).await.failure,
            Some(FailureCategory::Terminated)
        );
        for r in [&run, &done] {
            let starts = std::fs::read_to_string(
                third
                    .attempt_dir(&r.run_id, 1)
                    .expect("dir")
                    .parent()
                    .expect("run dir")
                    .join("starts"),
            )
            .expect("starts");
            assert_eq!(starts.lines().count(), 1, "one process per attempt");
        }
        // A new attempt starts anew.
        let mut next = done.clone();
        next.attempt = 2;
        let n = third.submit(&next, &done_def).await.expect("attempt 2");
        assert_ne!(n.engine_ref, d.engine_ref);
        wait_stopped(&third, &next).await;
        let starts = std::fs::read_to_string(
            third
                .attempt_dir(&done.run_id, 1)
                .expect("dir")
                .parent()
                .expect("run dir")
                .join("starts"),
        )
        .expect("starts");
        assert_eq!(starts.lines().count(), 2);
    }

    /// A server that dies: the engine object lives in a runtime of its own,
    /// which is shut down, so nothing of it watches its processes any more
    /// (they are its children no longer waited for, as after a SIGKILL of
    /// the server they are nobody's).
    fn submit_then_die(data: &Path, runs: &[(Run, Definition)], make: fn(&Path) -> LocalEngine) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let e = make(data);
            for (run, def) in runs {
                e.submit(run, def).await.expect("submit");
                let adir = e.attempt_dir(&run.run_id, 1).expect("dir");
                wait_for_file(&adir.join(OUTPUT), "ready").await;
            }
        });
        rt.shutdown_background();
    }

    fn artifact_engine(dir: &Path) -> LocalEngine {
        let artifacts = Artifacts::local(dir.join("artifacts")).expect("artifacts");
        LocalEngine::with_config(
            LocalConfig::new(dir)
                .terminate_grace(Duration::from_millis(300))
                .artifacts(artifacts),
        )
        .expect("engine")
    }

    /// Stages an input of one file `name` holding `text` for `run` (packed
    /// from a scratch dir under `scratch`) and sets its `input_url`.
    async fn stage_text_input(
        artifacts: &Artifacts,
        scratch: &Path,
        run: &mut Run,
        name: &str,
        text: &str,
    ) {
        let src = scratch.join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join(name), text).expect("write");
        let zip = crate::artifacts::zip::pack(&src, artifacts.limits()).expect("pack");
        run.input_url = Some(
            artifacts
                .stage_input(&run.run_id, zip)
                .await
                .expect("stage"),
        );
    }

    /// The server's default data dir is relative (`.flotilla-data`), and a
    /// job runs in its attempt directory: the dirs it is given must still
    /// lead to its files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_finds_its_input_with_a_relative_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = std::env::current_dir().expect("cwd");
        let up = "../".repeat(cwd.components().count().saturating_sub(1));
        let relative = PathBuf::from(format!(
            "{up}{}",
            dir.path().display().to_string().trim_start_matches('/')
        ));
        assert!(relative.is_relative() && relative.join("").exists());
        let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("artifacts");
        let e = LocalEngine::with_config(LocalConfig::new(&relative).artifacts(artifacts.clone()))
            .expect("engine");
        let (mut run, def) =
            new_run(r#"cp "$FLOTILLA_INPUT_DIR/in.txt" "$FLOTILLA_OUTPUT_DIR/copy.txt""#);
        stage_text_input(&artifacts, dir.path(), &mut run, "in.txt", "relative\n").await;
        e.submit(&run, &def).await.expect("submit");
        let u = wait_stopped(&e, &run).await;
        assert_eq!((u.exit_code, u.failure), (Some(0), None), "{u:?}");
        assert!(u.output_url.is_some(), "{u:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_that_ended_while_no_engine_watched_uploads_its_output_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("artifacts");
        let (mut run, def) = new_run(
            r#"echo ready; while [ ! -f go ]; do sleep 0.05; done; cp "$FLOTILLA_INPUT_DIR/in.txt" "$FLOTILLA_OUTPUT_DIR/copy.txt""#,
        );
        stage_text_input(&artifacts, dir.path(), &mut run, "in.txt", "from input\n").await;
        let data = dir.path().to_path_buf();
        let runs = [(run.clone(), def)];
        std::thread::spawn(move || submit_then_die(&data, &runs, artifact_engine))
            .join()
            .expect("first server");
        let adir = dir.path().join("runs").join(&run.run_id).join("attempt-1");
        std::fs::write(adir.join("go"), "").expect("go");
        wait_for_file(&adir.join(supervisor::STATUS), "0").await;
        assert!(!adir.join(EXIT).exists(), "nobody watched it end");

        let restarted = artifact_engine(dir.path());
        let u = wait_stopped(&restarted, &run).await;
        assert_eq!((u.exit_code, u.failure), (Some(0), None), "{u:?}");
        let url = u.output_url.clone().expect("uploaded by the adopter");
        let body = artifacts.get(&url, 1 << 20).await.expect("output zip");
        let out = dir.path().join("out");
        crate::artifacts::zip::unpack(&body, &out, artifacts.limits()).expect("unpack");
        assert_eq!(
            std::fs::read_to_string(out.join("copy.txt")).expect("copy"),
            "from input\n"
        );
        let object = dir
            .path()
            .join("artifacts/runs")
            .join(&run.run_id)
            .join("attempt-1/output.zip");
        let written = std::fs::metadata(&object)
            .expect("object")
            .modified()
            .expect("mtime");
        drop(restarted);
        let again = artifact_engine(dir.path());
        let u = again.poll(std::slice::from_ref(&run)).await.expect("poll");
        assert_eq!(u[0].output_url.as_deref(), Some(url.as_str()));
        assert_eq!(
            std::fs::metadata(&object)
                .expect("object")
                .modified()
                .expect("mtime"),
            written,
            "uploaded once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exit_codes_survive_the_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmd = |code: i32| {
            format!(
                "echo run >> ../starts; echo ready; while [ ! -f go ]; do sleep 0.05; done; exit {code}"
            )
        };
        // One finishes while no engine runs, one is still running at the
        // restart.
        let (during, during_def) = new_run(&cmd(3));
        let (after, after_def) = new_run(&cmd(7));
        let runs = [(during.clone(), during_def), (after.clone(), after_def)];
        let data = dir.path().to_path_buf();
        std::thread::spawn(move || submit_then_die(&data, &runs, engine))
            .join()
            .expect("first server");
        let restarted = engine(dir.path());
        let adir = |r: &Run| restarted.attempt_dir(&r.run_id, 1).expect("dir");
        std::fs::write(adir(&during).join("go"), "").expect("go");
        wait_for_file(&adir(&during).join(supervisor::STATUS), "3").await;

        let u = wait_stopped(&restarted, &during).await;
        assert_eq!(
            u.exit_code,
            Some(3),
            "the real exit code, not unknown: {u:?}"
        );
        assert_eq!(u.failure, None, "{u:?}");
        let u = restarted
            .poll(std::slice::from_ref(&after))
            .await
            .expect("poll");
        assert_eq!(u[0].state, TaskState::Running, "adopted: {u:?}");
        std::fs::write(adir(&after).join("go"), "").expect("go");
        let u = wait_stopped(&restarted, &after).await;
        assert_eq!(
            u.exit_code,
            Some(7),
            "the adopted run's real exit code: {u:?}"
        );
        assert_eq!(u.failure, None, "{u:?}");
        for r in [&during, &after] {
            let starts = std::fs::read_to_string(adir(r).parent().expect("run dir").join("starts"))
                .expect("starts");
            assert_eq!(starts.lines().count(), 1, "one execution of {}", r.run_id);
        }
        // Without a status (the whole group killed while nobody watched) the
        // fate is unknown, and the reason says so.
        let (lost, lost_def) = new_run("echo ready; sleep 60");
        let data = dir.path().to_path_buf();
        let runs = [(lost.clone(), lost_def)];
        std::thread::spawn(move || submit_then_die(&data, &runs, engine))
            .join()
            .expect("second server");
        let spawned: SpawnRecord = serde_json::from_slice(
            &std::fs::read(adir(&lost).join(SPAWNED)).expect("spawned.json"),
        )
        .expect("record");
        signal_group(spawned.pid, Signal::SIGKILL);
        let give_up = Instant::now() + LIMIT;
        while alive(spawned.pid, spawned.proc_start) {
            assert!(Instant::now() < give_up, "the group survived SIGKILL");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let u = wait_stopped(&engine(dir.path()), &lost).await;
        assert_eq!(u.failure, Some(FailureCategory::Unknown), "{u:?}");
        assert!(
            u.reason.as_deref().is_some_and(|r| r.contains("unknown")),
            "{u:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_short_runs_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(engine(dir.path()));
        let runs: Vec<(Run, Definition)> =
            (0..300).map(|i| new_run(&format!("echo {i}"))).collect();
        let submits =
            futures::future::join_all(runs.iter().map(|(r, d)| engine.submit(r, d))).await;
        for s in submits {
            s.expect("submit");
        }
        let all: Vec<Run> = runs.iter().map(|(r, _)| r.clone()).collect();
        let give_up = Instant::now() + LIMIT;
        loop {
            let updates = engine.poll(&all).await.expect("poll");
            assert_eq!(updates.len(), all.len());
            if updates.iter().all(|u| u.state == TaskState::Stopped) {
                assert!(updates.iter().all(|u| u.exit_code == Some(0)));
                break;
            }
            assert!(Instant::now() < give_up, "not all stopped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(engine.running(), 0);
    }
}
