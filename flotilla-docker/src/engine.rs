//! [`DockerEngine`]: one container per run attempt.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, DeviceRequest, HostConfig,
};
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use chrono::{DateTime, Utc};
use flotilla::EngineEvent;
use flotilla::{
    Capabilities, Definition, Engine, FailureCategory, Instance, Run, StatusUpdate, Submitted,
    TaskState,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::broadcast;

use crate::config::DockerConfig;
use crate::error::{DResult, DockerError, DockerErrorKind};
use crate::events::{OomSeen, Watch, watch};
use crate::logs::{DockerLogs, fetch_log};
use crate::store::{Files, LOG, OUTCOME, Outcome, STOP, StopCause, UPLOAD, UploadRecord};

/// Marker in an attempt's directory: a failed attempt uploads no output.
const SKIP_FAILED_OUTPUT: &str = "skip-failed-output";

/// Label holding the run id.
pub const RUN_LABEL: &str = "flotilla.run_id";
/// Label holding the attempt number.
pub const ATTEMPT_LABEL: &str = "flotilla.attempt";
/// Label holding the run's cluster.
pub const CLUSTER_LABEL: &str = "flotilla.cluster";
/// Label holding the engine's name prefix: the containers an engine owns.
pub const MANAGED_LABEL: &str = "flotilla.managed";

type Key = (String, u32);

/// State shared by the engine and its log source.
#[derive(Debug)]
pub(crate) struct Shared {
    pub docker: Docker,
    pub config: DockerConfig,
    pub files: Files,
    host: Instance,
    /// Serializes submits, terminates and clean-ups of one attempt.
    locks: Mutex<HashMap<Key, Arc<AsyncMutex<()>>>>,
    /// Outcomes of exited containers (they never change).
    ended: Mutex<HashMap<Key, Outcome>>,
    /// Containers the daemon's event stream reported OOM-killed.
    pub oom_seen: OomSeen,
    /// Pushed status changes.
    events: broadcast::Sender<EngineEvent>,
    /// The task following the daemon's events (set once the engine exists).
    watch: Mutex<Option<Watch>>,
}

impl Shared {
    /// The container name of an attempt.
    pub fn container_name(&self, run_id: &str, attempt: u32) -> String {
        format!("{}-{run_id}-a{attempt}", self.config.name_prefix)
    }

    fn lock_for(&self, key: &Key) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    fn cached(&self, key: &Key) -> Option<Outcome> {
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.get(key).cloned()
    }

    /// Drops what memory holds about a finished attempt (its outcome is on
    /// disk by then), so a long-lived engine does not grow with every run.
    fn forget(&self, key: &Key) {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.oom_seen.forget(&self.container_name(&key.0, key.1));
    }

    fn remember(&self, key: Key, outcome: Outcome) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.insert(key, outcome);
    }

    /// Inspects a container; `Ok(None)` when it does not exist.
    pub async fn inspect(&self, name: &str) -> DResult<Option<ContainerInspectResponse>> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let e = DockerError::from_bollard("inspect container", e);
                if e.kind() == DockerErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The outcome of an exited container, classified.
    async fn classify(
        &self,
        run_id: &str,
        attempt: u32,
        c: &ContainerInspectResponse,
    ) -> DResult<Outcome> {
        let state = c.state.clone().unwrap_or_default();
        let name = self.container_name(run_id, attempt);
        let stop: Option<StopCause> = self.files.read_json(run_id, attempt, STOP).await?;
        let code = state.exit_code;
        let started_at = parse_time(state.started_at.as_deref());
        let finished_at = parse_time(state.finished_at.as_deref());
        let error = state.error.filter(|e| !e.is_empty());
        // A process of the container was OOM-killed and the container
        // failed: the daemon's flag, its `oom` event seen live, or (for a
        // SIGKILL exit, e.g. after a restart) its `oom` event still held.
        let oom = code.is_some_and(|c| c != 0)
            && (state.oom_killed == Some(true)
                || self.oom_seen.contains(&name)
                || (code == Some(137) && self.oom_reported(&name, started_at).await));
        let (failure, reason) = if let Some(cause) = stop {
            match cause {
                StopCause::Terminated(why) => (Some(FailureCategory::Terminated), why),
                StopCause::Timeout(why) => (Some(FailureCategory::Timeout), why),
            }
        } else if oom {
            (
                Some(FailureCategory::Oom),
                format!(
                    "OOMKilled: the container exceeded its memory limit (exit code {})",
                    code.unwrap_or(137)
                ),
            )
        } else if let Some(err) = error {
            // The daemon could not start the process (no such executable,
            // a bad mount): the container never ran the program.
            (
                Some(FailureCategory::ContainerStart),
                format!("container start failed: {err}"),
            )
        } else {
            match code {
                Some(0) => (None, "exit code 0".to_string()),
                Some(c) => {
                    let reason = match flotilla::signals::signal_of_exit_code(c) {
                        Some((sig, name)) => {
                            format!("exit code {c}: killed by {name} (signal {sig})")
                        }
                        None => format!("exit code {c}"),
                    };
                    (Some(FailureCategory::AppExit), reason)
                }
                None => (
                    Some(FailureCategory::Unknown),
                    "the container ended without an exit code".to_string(),
                ),
            }
        };
        Ok(Outcome {
            exit_code: code,
            reason: Some(reason),
            failure,
            started_at,
            finished_at,
            output_url: None,
        })
    }

    /// Whether the daemon still holds an `oom` event for container `name`
    /// since `started` (its event log is bounded, so only recent ones).
    async fn oom_reported(&self, name: &str, started: Option<DateTime<Utc>>) -> bool {
        let since = started.map_or(0, |t| t.timestamp() - 1);
        let until = Utc::now().timestamp() + 1;
        let filters = HashMap::from([
            ("container", vec![name.to_string()]),
            ("event", vec!["oom".to_string()]),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .until(&until.to_string())
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(opts));
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
        matches!(first, Ok(Some(Ok(_))))
    }

    /// The stop of an attempt whose container ended, classified, once it
    /// is settled: `Ok(None)` when the container is not there or not ended,
    /// `Some(Err(wait))` for a fresh SIGKILL that may still be marked OOM.
    pub async fn settled_outcome(
        &self,
        run_id: &str,
        attempt: u32,
    ) -> DResult<Option<std::result::Result<StatusUpdate, std::time::Duration>>> {
        let key = (run_id.to_string(), attempt);
        if let Some(o) = self.cached(&key) {
            return Ok(Some(Ok(self.stopped(run_id, attempt, &o))));
        }
        let Some(c) = self.inspect(&self.container_name(run_id, attempt)).await? else {
            return Ok(None);
        };
        if !has_ended(&c) {
            return Ok(None);
        }
        Ok(Some(self.settle(run_id, attempt, &c).await?))
    }

    /// The stop of the ended container `c`, classified and remembered;
    /// `Err(wait)` for a fresh SIGKILL that may still be marked OOM (how
    /// long until it is settled), which is neither remembered nor reported.
    async fn settle(
        &self,
        run_id: &str,
        attempt: u32,
        c: &ContainerInspectResponse,
    ) -> DResult<std::result::Result<StatusUpdate, std::time::Duration>> {
        let o = self.classify(run_id, attempt, c).await?;
        if oom_may_follow(&o) {
            let since = o
                .finished_at
                .map_or(chrono::TimeDelta::zero(), |t| Utc::now() - t);
            let wait = (OOM_SETTLE - since).to_std().unwrap_or_default();
            return Ok(Err(wait + std::time::Duration::from_millis(100)));
        }
        let o = self.with_upload(run_id, attempt, o).await?;
        self.remember((run_id.to_string(), attempt), o.clone());
        Ok(Ok(self.stopped(run_id, attempt, &o)))
    }

    /// A status update of the attempt, with the host as instance.
    pub fn update(&self, run_id: &str, attempt: u32, state: TaskState) -> StatusUpdate {
        let mut u = StatusUpdate::new(run_id, attempt, state);
        u.instance = Some(self.host.clone());
        u
    }

    fn stopped(&self, run_id: &str, attempt: u32, o: &Outcome) -> StatusUpdate {
        let mut u = self.update(run_id, attempt, TaskState::Stopped);
        u.exit_code = o.exit_code;
        u.reason = o.reason.clone();
        u.failure = o.failure;
        u.started_at = o.started_at;
        u.finished_at = o.finished_at;
        u.output_url = o.output_url.clone();
        u
    }

    /// The outcome with its output upload applied (see
    /// [`DockerConfig::artifacts`]): done once per attempt, its result kept
    /// in `upload.json` for every later look.
    async fn with_upload(&self, run_id: &str, attempt: u32, mut o: Outcome) -> DResult<Outcome> {
        let Some(artifacts) = &self.config.artifacts else {
            return Ok(o);
        };
        let dir = self.files.dir(run_id, attempt);
        let rec = match self
            .files
            .read_json::<UploadRecord>(run_id, attempt, UPLOAD)
            .await?
        {
            Some(rec) => rec,
            None if !dir.join(flotilla::artifacts::OUTPUT_DIR).is_dir() => return Ok(o),
            None => {
                let skip_failed = dir.join(SKIP_FAILED_OUTPUT).exists();
                let (mut failure, mut reason) = (o.failure, o.reason.clone());
                let output_url = artifacts
                    .upload_attempt(
                        &dir,
                        (run_id, attempt),
                        skip_failed,
                        &mut failure,
                        &mut reason,
                        o.exit_code,
                    )
                    .await;
                let rec = UploadRecord {
                    output_url,
                    failure,
                    reason,
                };
                self.files.write_json(run_id, attempt, UPLOAD, &rec).await?;
                rec
            }
        };
        o.output_url = rec.output_url;
        o.failure = rec.failure;
        o.reason = rec.reason;
        Ok(o)
    }
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    // Docker's zero time (never started / not finished).
    (t.timestamp() > 0).then_some(t)
}

/// Checks that `run_id` can name a container and a directory.
pub(crate) fn check_run_id(run_id: &str) -> DResult<()> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DockerError::new(
            DockerErrorKind::Invalid,
            format!(
                "run_id: '{run_id}' cannot name a container (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)"
            ),
        ))
    }
}

/// Runs each run attempt as a Docker container.
///
/// - One container per `(run_id, attempt)`, named
///   `<name_prefix>-<run_id>-a<attempt>` and labelled [`RUN_LABEL`],
///   [`ATTEMPT_LABEL`], [`CLUSTER_LABEL`] and [`MANAGED_LABEL`]. Submit
///   inspects that name first: an existing container is adopted (started
///   only if it was created and never started), and a create that conflicts
///   (another submit won the race) adopts the winner. Submits of one
///   attempt are serialized within the engine; containers have no restart
///   policy, so the daemon never runs one twice either.
/// - The image is pulled when missing (a tag defaults to `latest`); a pull
///   that fails records the attempt as stopped with failure `image_pull`
///   (that attempt is over; the retry policy decides about another).
/// - Pulls use the registry credentials of
///   [`DockerConfig::registry_config`] (a Docker `config.json`: `auths`,
///   credential helpers and stores).
/// - `memory` (MiB) is a hard limit (memory = memory + swap), `cpu`
///   (millicores) becomes `NanoCpus`, `gpu` a device request for that many
///   GPUs (only with [`DockerConfig::gpus`]; otherwise the capability is off
///   and such runs are refused); the run's `env` plus
///   `FLOTILLA_RUN_ATTEMPT`; the command runs as `sh -c <command>` (no
///   command: the image's own); the network mode is
///   [`DockerConfig::network_mode`] (default `none`).
/// - Status changes are pushed ([`Engine::events`]) from the daemon's event
///   stream (`start`, `die`, `oom` of the engine's containers, re-opened
///   from the last event after a break, with a `Resync`); `poll` is the
///   safety net: it lists the engine's containers in one call, then
///   inspects those that exited (once; their outcome is kept) and running
///   ones with a deadline. Exit code 0 is success; a failed container that
///   the daemon marked `OOMKilled`, or reported by an `oom` event, is `oom`
///   (the event is the record that does not race with the exit); a
///   container the daemon could not start is `container_start`; another code
///   is `app_exit`, a code above 128 naming its signal; one stopped by
///   terminate is `terminated`, one past `active_deadline_seconds` is
///   `timeout` (the stop cause is written to the data dir before the
///   container is signalled, so a restarted engine still knows). A container
///   that is absent, with no recorded outcome, is `Missing`; when the daemon
///   cannot be asked, `poll` fails (nothing is observable) or leaves the run
///   out, never `Missing`.
/// - `terminate` sends SIGTERM, and the daemon SIGKILL after
///   [`DockerConfig::stop_grace`] (`docker stop`, asked in the background).
/// - `finished` (after flotilla stored the outcome) archives the log and the
///   outcome to the data dir, then removes the container (unless
///   [`DockerConfig::remove_finished`] is false); later polls, submits and
///   log reads answer from the archive.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    shared: Arc<Shared>,
}

impl DockerEngine {
    /// Connects to the daemon at `config.host` (negotiating the API
    /// version) and checks that it answers.
    pub async fn connect(config: DockerConfig) -> flotilla::Result<Self> {
        let path = config.host.strip_prefix("unix://").ok_or_else(|| {
            DockerError::new(
                DockerErrorKind::Invalid,
                format!(
                    "docker host '{}': only unix:///path sockets are supported",
                    config.host
                ),
            )
        })?;
        let docker =
            Docker::connect_with_unix(path, config.api_timeout_secs, bollard::API_DEFAULT_VERSION)
                .map_err(|e| DockerError::from_bollard("connect", e))?
                .negotiate_version()
                .await
                .map_err(|e| DockerError::from_bollard("negotiate the API version", e))?;
        docker
            .ping()
            .await
            .map_err(|e| DockerError::from_bollard("ping", e))?;
        let hostname = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        let files = Files::new(flotilla::artifacts::absolute_data_dir(&config.data_dir)?);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let engine = DockerEngine {
            shared: Arc::new(Shared {
                docker,
                files,
                host: Instance {
                    instance_id: hostname.clone(),
                    dns_name: hostname,
                },
                config,
                locks: Mutex::new(HashMap::new()),
                ended: Mutex::new(HashMap::new()),
                oom_seen: OomSeen::default(),
                events: events.clone(),
                watch: Mutex::new(None),
            }),
        };
        let w = watch(Arc::downgrade(&engine.shared), events);
        *engine
            .shared
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(w);
        Ok(engine)
    }

    /// The log source reading this engine's containers and archives.
    pub fn log_source(&self) -> DockerLogs {
        DockerLogs::new(self.shared.clone())
    }

    /// The Docker client, for callers that inspect the daemon themselves.
    pub fn docker(&self) -> &Docker {
        &self.shared.docker
    }

    /// The container name of `(run_id, attempt)`.
    pub fn container_name(&self, run_id: &str, attempt: u32) -> String {
        self.shared.container_name(run_id, attempt)
    }

    async fn submit_locked(&self, run: &Run, definition: &Definition) -> DResult<Submitted> {
        let s = &self.shared;
        let name = s.container_name(&run.run_id, run.attempt);
        let submitted = Submitted {
            engine_ref: name.clone(),
            instance: Some(s.host.clone()),
        };
        // An attempt whose outcome is recorded (its container removed, or
        // its image never pulled) is over: nothing starts again.
        if s.files.path(&run.run_id, run.attempt, OUTCOME).exists() {
            return Ok(submitted);
        }
        if let Some(c) = s.inspect(&name).await? {
            self.start_if_never_started(&name, &c).await?;
            return Ok(submitted);
        }
        if let Err(pull) = self.ensure_image(&run.image).await {
            if pull.kind() == DockerErrorKind::ImagePull {
                let outcome = Outcome {
                    exit_code: None,
                    reason: Some(pull.to_string()),
                    failure: Some(FailureCategory::ImagePull),
                    started_at: None,
                    finished_at: Some(Utc::now()),
                    output_url: None,
                };
                s.files
                    .write_json(&run.run_id, run.attempt, OUTCOME, &outcome)
                    .await?;
                return Ok(submitted);
            }
            return Err(pull);
        }
        let io_dirs = self.stage_io_dirs(run).await?;
        let body = self.container_body(run, definition, io_dirs.as_deref());
        let opts = CreateContainerOptions {
            name: Some(name.clone()),
            platform: String::new(),
        };
        match s.docker.create_container(Some(opts), body).await {
            Ok(_) => {}
            Err(e) => {
                let e = DockerError::from_bollard("create container", e);
                if e.kind() != DockerErrorKind::Conflict {
                    return Err(e);
                }
                // Another submit (another engine object) created it: adopt.
            }
        }
        match s.inspect(&name).await? {
            Some(c) => self.start_if_never_started(&name, &c).await?,
            None => {
                return Err(DockerError::new(
                    DockerErrorKind::Daemon,
                    format!("container {name} vanished right after its creation"),
                ));
            }
        }
        Ok(submitted)
    }

    async fn start_if_never_started(
        &self,
        name: &str,
        c: &ContainerInspectResponse,
    ) -> DResult<()> {
        let state = c.state.clone().unwrap_or_default();
        let never_started = state.status == Some(ContainerStateStatusEnum::CREATED)
            && parse_time(state.started_at.as_deref()).is_none()
            && !has_ended(c);
        if !never_started {
            return Ok(());
        }
        match self.shared.docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => {
                let e = DockerError::from_bollard("start container", e);
                // A refusal the daemon recorded on the container (a device
                // it lacks) is that attempt's end, classified by poll.
                let recorded = match self.shared.inspect(name).await {
                    Ok(Some(c)) => has_ended(&c),
                    _ => false,
                };
                if e.kind() == DockerErrorKind::Daemon && !recorded {
                    Err(e)
                } else {
                    // The daemon refused to start it (a bad command, a bad
                    // mount): the container exists and its state says why;
                    // poll classifies it.
                    tracing::warn!(container = name, error = %e, "container did not start");
                    Ok(())
                }
            }
        }
    }

    async fn ensure_image(&self, image: &str) -> DResult<()> {
        if image.is_empty() {
            return Err(DockerError::new(
                DockerErrorKind::Invalid,
                "image: required",
            ));
        }
        match self.shared.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = DockerError::from_bollard("inspect image", e);
                if e.kind() != DockerErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        let (from_image, tag) = split_tag(image);
        let opts = CreateImageOptions {
            from_image: Some(from_image.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let credentials =
            crate::credentials::for_image(self.shared.config.registry_config.as_deref(), image)
                .await?;
        let mut pull = self
            .shared
            .docker
            .create_image(Some(opts), None, credentials);
        while let Some(item) = pull.next().await {
            if let Err(e) = item {
                return Err(pull_error(image, e));
            }
        }
        Ok(())
    }

    /// With artifacts: the attempt's `input/` (the run's input unpacked)
    /// and `output/`, made before its container; the attempt directory's
    /// absolute path.
    async fn stage_io_dirs(&self, run: &Run) -> DResult<Option<std::path::PathBuf>> {
        let Some(artifacts) = &self.shared.config.artifacts else {
            return Ok(None);
        };
        let dir = self.shared.files.dir(&run.run_id, run.attempt);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| DockerError::storage(dir.display(), e))?;
        let dir = tokio::fs::canonicalize(&dir)
            .await
            .map_err(|e| DockerError::storage(dir.display(), e))?;
        let staged = artifacts
            .stage_input_dir(&dir, run.input_url.as_deref())
            .await
            .map_err(DockerError::artifacts)?;
        if let Err(e) = flotilla::artifacts::Artifacts::place_io_dirs(&dir, staged.as_deref()) {
            flotilla::artifacts::discard_staged(staged.as_deref());
            return Err(DockerError::artifacts(e));
        }
        let marker = dir.join(SKIP_FAILED_OUTPUT);
        if run.skip_failed_output {
            tokio::fs::write(&marker, b"")
                .await
                .map_err(|e| DockerError::storage(marker.display(), e))?;
        }
        Ok(Some(dir))
    }

    fn container_body(
        &self,
        run: &Run,
        definition: &Definition,
        io_dirs: Option<&std::path::Path>,
    ) -> ContainerCreateBody {
        let mut env: Vec<String> = run
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        env.push(format!("FLOTILLA_RUN_ATTEMPT={}", run.attempt));
        let binds = io_dirs.map(|dir| {
            env.push(format!("{}=/input", flotilla::local::ENV_INPUT_DIR));
            env.push(format!("{}=/output", flotilla::local::ENV_OUTPUT_DIR));
            vec![
                format!(
                    "{}:/input:ro",
                    dir.join(flotilla::artifacts::INPUT_DIR).display()
                ),
                format!(
                    "{}:/output",
                    dir.join(flotilla::artifacts::OUTPUT_DIR).display()
                ),
            ]
        });
        let command = run.command.clone().or_else(|| definition.command.clone());
        let cmd = command.map(|c| vec!["sh".to_string(), "-c".to_string(), c]);
        let labels = HashMap::from([
            (RUN_LABEL.to_string(), run.run_id.clone()),
            (ATTEMPT_LABEL.to_string(), run.attempt.to_string()),
            (CLUSTER_LABEL.to_string(), run.cluster.clone()),
            (
                MANAGED_LABEL.to_string(),
                self.shared.config.name_prefix.clone(),
            ),
        ]);
        let memory = run
            .memory
            .or(definition.memory)
            .filter(|m| *m > 0)
            .map(|mib| mib.saturating_mul(1024 * 1024));
        let nano_cpus = run
            .cpu
            .or(definition.cpu)
            .filter(|c| *c > 0)
            .map(|milli| milli.saturating_mul(1_000_000));
        let gpus = run.gpu.or(definition.gpu).filter(|g| *g > 0);
        let device_requests = gpus.map(|count| {
            vec![DeviceRequest {
                driver: Some(self.shared.config.gpu_driver.clone()),
                count: Some(count),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]
        });
        ContainerCreateBody {
            image: Some(run.image.clone()),
            cmd,
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory,
                memory_swap: memory,
                nano_cpus,
                device_requests,
                network_mode: Some(self.shared.config.network_mode.clone()),
                binds,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Lists the engine's containers: name → state.
    async fn list(&self) -> DResult<HashMap<String, ContainerSummaryStateEnum>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!(
                "{MANAGED_LABEL}={}",
                self.shared.config.name_prefix
            )],
        )]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .shared
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| DockerError::from_bollard("list containers", e))?;
        let mut out = HashMap::new();
        for c in list {
            let state = c.state.unwrap_or(ContainerSummaryStateEnum::EMPTY);
            for n in c.names.unwrap_or_default() {
                out.insert(n.trim_start_matches('/').to_string(), state);
            }
        }
        Ok(out)
    }

    /// Observes one run given the listing; `Ok(None)` leaves it out.
    async fn observe(
        &self,
        run: &Run,
        listed: &HashMap<String, ContainerSummaryStateEnum>,
    ) -> DResult<Option<StatusUpdate>> {
        let s = &self.shared;
        let key = (run.run_id.clone(), run.attempt);
        if let Some(o) = s.cached(&key) {
            return Ok(Some(s.stopped(&run.run_id, run.attempt, &o)));
        }
        let name = s.container_name(&run.run_id, run.attempt);
        let Some(state) = listed.get(&name).copied() else {
            if let Some(o) = s
                .files
                .read_json::<Outcome>(&run.run_id, run.attempt, OUTCOME)
                .await?
            {
                s.remember(key, o.clone());
                return Ok(Some(s.stopped(&run.run_id, run.attempt, &o)));
            }
            return Ok(Some(s.update(&run.run_id, run.attempt, TaskState::Missing)));
        };
        use ContainerSummaryStateEnum as S;
        match state {
            S::CREATED | S::EXITED | S::DEAD => {
                let Some(c) = s.inspect(&name).await? else {
                    // Removed since the listing: ask again next time.
                    return Ok(None);
                };
                if !has_ended(&c) {
                    return Ok(Some(s.update(&run.run_id, run.attempt, TaskState::Pending)));
                }
                // A fresh SIGKILL that may still be marked OOM is looked at
                // again next poll.
                Ok(s.settle(&run.run_id, run.attempt, &c).await?.ok())
            }
            _ => {
                let mut u = s.update(&run.run_id, run.attempt, TaskState::Running);
                if let Some(deadline) = run.active_deadline_seconds.filter(|d| *d > 0) {
                    let Some(c) = s.inspect(&name).await? else {
                        return Ok(None);
                    };
                    let started =
                        parse_time(c.state.as_ref().and_then(|st| st.started_at.as_deref()));
                    u.started_at = started;
                    if let Some(t) = started
                        && Utc::now() > t + chrono::Duration::seconds(deadline)
                    {
                        let why = format!("timeout: exceeded active_deadline_seconds = {deadline}");
                        self.stop(run, StopCause::Timeout(why)).await?;
                    }
                }
                Ok(Some(u))
            }
        }
    }

    /// Records why and stops the attempt's container: SIGTERM now, SIGKILL
    /// from the daemon after the grace.
    async fn stop(&self, run: &Run, cause: StopCause) -> DResult<()> {
        let s = &self.shared;
        let name = s.container_name(&run.run_id, run.attempt);
        let Some(c) = s.inspect(&name).await? else {
            return Ok(());
        };
        let state = c.state.clone().unwrap_or_default();
        match state.status {
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                return Ok(());
            }
            Some(ContainerStateStatusEnum::CREATED) => {
                // Never started: it never will.
                let why = match &cause {
                    StopCause::Terminated(w) | StopCause::Timeout(w) => w.clone(),
                };
                let outcome = Outcome {
                    exit_code: None,
                    reason: Some(why),
                    failure: Some(match cause {
                        StopCause::Terminated(_) => FailureCategory::Terminated,
                        StopCause::Timeout(_) => FailureCategory::Timeout,
                    }),
                    started_at: None,
                    finished_at: Some(Utc::now()),
                    output_url: None,
                };
                s.files
                    .write_json(&run.run_id, run.attempt, OUTCOME, &outcome)
                    .await?;
                let _ = s
                    .docker
                    .remove_container(
                        &name,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                return Ok(());
            }
            _ => {}
        }
        if s.files
            .read_json::<StopCause>(&run.run_id, run.attempt, STOP)
            .await?
            .is_none()
        {
            s.files
                .write_json(&run.run_id, run.attempt, STOP, &cause)
                .await?;
        }
        match s
            .docker
            .kill_container(
                &name,
                Some(KillContainerOptions {
                    signal: "SIGTERM".to_string(),
                }),
            )
            .await
        {
            Ok(()) => {}
            Err(e) => {
                let e = DockerError::from_bollard("kill container", e);
                // 404: gone; 409: not running any more.
                if e.kind() == DockerErrorKind::Daemon {
                    return Err(e);
                }
            }
        }
        let docker = s.docker.clone();
        let grace = i32::try_from(s.config.stop_grace.as_secs()).unwrap_or(i32::MAX);
        tokio::spawn(async move {
            let opts = StopContainerOptions {
                t: Some(grace),
                signal: None,
            };
            if let Err(e) = docker.stop_container(&name, Some(opts)).await {
                tracing::debug!(container = %name, error = %e, "stop after the grace");
            }
        });
        Ok(())
    }

    async fn finish_attempt(&self, run: &Run) -> DResult<()> {
        let s = &self.shared;
        let name = s.container_name(&run.run_id, run.attempt);
        let Some(c) = s.inspect(&name).await? else {
            return Ok(());
        };
        if !has_ended(&c) {
            // Not over at the daemon (a NEEDS_RETRY decided on an old
            // observation?): keep it, its end is still to be seen.
            return Ok(());
        }
        let outcome = s.classify(&run.run_id, run.attempt, &c).await?;
        let outcome = s.with_upload(&run.run_id, run.attempt, outcome).await?;
        let log = fetch_log(&s.docker, &name).await?;
        s.files
            .write_bytes(&run.run_id, run.attempt, LOG, &log)
            .await?;
        s.files
            .write_json(&run.run_id, run.attempt, OUTCOME, &outcome)
            .await?;
        if s.config.remove_finished {
            match s.docker.remove_container(&name, None).await {
                Ok(()) => {}
                Err(e) => {
                    let e = DockerError::from_bollard("remove container", e);
                    if e.kind() != DockerErrorKind::NotFound {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `repo[:tag]` → `(repo, tag)`, the tag defaulting to `latest` (a pull
/// without one would fetch every tag). A digest (`@sha256:…`) is kept whole.
fn split_tag(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

fn pull_error(image: &str, e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as B;
    match e {
        // The daemon answered: the registry or the image is the problem.
        B::DockerResponseServerError { message, .. } | B::DockerStreamError { error: message } => {
            DockerError::new(
                DockerErrorKind::ImagePull,
                format!("image pull of '{image}' failed: {message}"),
            )
        }
        other => DockerError::from_bollard("pull image", other),
    }
}

#[async_trait]
impl Engine for DockerEngine {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpu: self.shared.config.gpus,
            ports: false,
            logs: true,
            deadline: true,
            push_events: true,
            images: true,
            artifacts: self.shared.config.artifacts.is_some(),
        }
    }

    /// This machine's cores and memory: the daemon is the local one
    /// (`unix:///var/run/docker.sock` by default), so containers share
    /// the host with the server.
    fn default_capacity(&self) -> Option<flotilla::Capacity> {
        Some(flotilla::Capacity::host())
    }

    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        Some(EngineEvent::broadcast_stream(
            self.shared.events.subscribe(),
        ))
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> flotilla::Result<Submitted> {
        check_run_id(&run.run_id)?;
        if run.attempt == 0 {
            return Err(flotilla::Error::invalid("attempt: attempts count from 1"));
        }
        if run.gpu.or(definition.gpu).is_some_and(|g| g > 0) && !self.shared.config.gpus {
            return Err(flotilla::Error::invalid(
                "gpu: this Docker engine has no GPUs (docker gpus = false)",
            ));
        }
        let key = (run.run_id.clone(), run.attempt);
        let lock = self.shared.lock_for(&key);
        let _held = lock.lock().await;
        Ok(self.submit_locked(run, definition).await?)
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let listed = self.list().await?;
        let mut out = Vec::with_capacity(runs.len());
        let mut seen = HashSet::new();
        for run in runs {
            if !seen.insert((run.run_id.as_str(), run.attempt)) {
                continue;
            }
            if check_run_id(&run.run_id).is_err() || run.attempt == 0 {
                out.push(StatusUpdate::new(
                    &run.run_id,
                    run.attempt,
                    TaskState::Missing,
                ));
                continue;
            }
            match self.observe(run, &listed).await {
                Ok(Some(u)) => out.push(u),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(run_id = %run.run_id, attempt = run.attempt, error = %e, "observing a docker run failed");
                }
            }
        }
        Ok(out)
    }

    async fn terminate(&self, run: &Run, reason: &str) -> flotilla::Result<()> {
        if check_run_id(&run.run_id).is_err() || run.attempt == 0 {
            return Ok(());
        }
        let key = (run.run_id.clone(), run.attempt);
        let lock = self.shared.lock_for(&key);
        let _held = lock.lock().await;
        Ok(self
            .stop(run, StopCause::Terminated(reason.to_string()))
            .await?)
    }

    async fn finished(&self, run: &Run) -> flotilla::Result<()> {
        if check_run_id(&run.run_id).is_err() || run.attempt == 0 {
            return Ok(());
        }
        let key = (run.run_id.clone(), run.attempt);
        let lock = self.shared.lock_for(&key);
        let held = lock.lock().await;
        self.finish_attempt(run).await?;
        self.shared.forget(&key);
        drop(held);
        let mut locks = self.shared.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only this map and the guard just dropped held it: nobody waits.
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(&key);
        }
        Ok(())
    }
}

/// Whether the container's attempt is over: it exited, or the daemon
/// refused to start it and recorded why (it stays `created` with an error).
fn has_ended(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().is_some_and(|st| match st.status {
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => true,
        Some(ContainerStateStatusEnum::CREATED) => {
            st.error.as_deref().is_some_and(|e| !e.is_empty())
        }
        _ => false,
    })
}

/// Pushed changes buffered per subscriber before it lags (and resyncs).
const EVENT_CAPACITY: usize = 4096;

/// How long after a SIGKILL exit (137) the daemon may still set
/// `State.OOMKilled`: its OOM event can arrive after the exit event.
const OOM_SETTLE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

/// Whether `o` is a SIGKILL not (yet) marked OOMKilled that ended less than
/// [`OOM_SETTLE`] ago, so its classification may still change.
fn oom_may_follow(o: &Outcome) -> bool {
    o.exit_code == Some(137)
        && o.failure == Some(FailureCategory::AppExit)
        && o.finished_at.is_none_or(|t| Utc::now() - t < OOM_SETTLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_default_to_latest() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("a/b:1"), ("a/b", "1"));
        assert_eq!(
            split_tag("127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x", "latest")
        );
        assert_eq!(split_tag("127.0.0.1:5000/x:2"), ("127.0.0.1:5000/x", "2"));
        assert_eq!(split_tag("x@sha256:ab"), ("x@sha256:ab", ""));
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(check_run_id("0190-abc_d.e").is_ok());
        for bad in ["", "-x", "a/b", "..", "a b", "ä"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }
}
