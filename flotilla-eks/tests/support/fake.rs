//! A small fake Kubernetes API server (axum, real 127.0.0.1 socket) with the
//! subset `EksEngine` and `PodLogs` use: Jobs (create, get, list, delete,
//! watch), the Pods the "Job controller" creates for them (get, list, watch,
//! delete, log), `resourceVersion` and watch semantics close enough for
//! kube-runtime's watcher (initial list, replay from a resource version,
//! `410 Gone` after compaction), request counting per verb and resource,
//! kubelet helpers to move pods along, and the TTL-after-finished
//! controller (a finished Job with `ttlSecondsAfterFinished` is deleted with
//! its pods once that many seconds passed on the server's clock, which
//! tests can move forward with [`FakeApiServer::advance_clock`]). Pods
//! with init containers get `initContainerStatuses`; native sidecars
//! (`restartPolicy: Always`) keep a pod `Running` after its job container
//! exited until they are stopped, and its phase is decided by the regular
//! containers alone, as the kubelet does (>= 1.29).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

/// One log line of a pod: when and what.
type LogLine = (DateTime<Utc>, String);

const JOBS: &str = "jobs";
const PODS: &str = "pods";

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    resource: &'static str,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Db {
    rv: u64,
    jobs: BTreeMap<(String, String), Value>,
    pods: BTreeMap<(String, String), Value>,
    logs: HashMap<(String, String), Vec<LogLine>>,
    history: Vec<Change>,
    compacted_below: u64,
    counts: BTreeMap<String, u64>,
    failures: HashMap<String, Vec<u16>>,
    refuse_watches: bool,
    /// The whole API is down: every request answers 500.
    down: bool,
    node: String,
    suffix: u64,
    /// Pods ever created per Job name.
    pods_created: HashMap<String, usize>,
    /// Jobs with a deadline: (namespace, name) → when it passes.
    deadlines: HashMap<(String, String), std::time::Instant>,
    /// Finished Jobs: (namespace, name) → when they finished.
    finished: HashMap<(String, String), std::time::Instant>,
    /// How far the cluster's clock is ahead of the real one.
    skew: Duration,
}

struct Inner {
    db: Mutex<Db>,
    changes: broadcast::Sender<Change>,
    drop_watches: watch::Sender<u64>,
    /// Watch streams being served now.
    open_watches: AtomicUsize,
}

/// Counts one served watch stream while it lives.
struct OpenWatch(Arc<Inner>);

impl OpenWatch {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(inner.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake API server; cheap to clone.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
    url: String,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("url", &self.url)
            .finish()
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn injected(code: u16) -> Response {
    match code {
        422 => status(code, "Invalid", "Job.batch is invalid: injected failure"),
        429 => status(
            code,
            "TooManyRequests",
            "injected failure: too many requests",
        ),
        409 => status(code, "Conflict", "injected failure: conflict"),
        401 => status(code, "Unauthorized", "Unauthorized"),
        403 => status(
            code,
            "Forbidden",
            "jobs.batch is forbidden: User \"system:anonymous\" cannot create resource \"jobs\"",
        ),
        503 => status(code, "ServiceUnavailable", "injected failure: unavailable"),
        _ => status(code, "InternalError", "injected failure"),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `a=b,c==d,e!=f,g,!h`.
fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels.get(k.trim()).map(String::as_str) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels.get(k.trim()).map(String::as_str) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                !labels.contains_key(k)
            } else {
                labels.contains_key(term)
            }
        })
}

/// The Job a pod belongs to (its `job-name` label), without copying the
/// labels.
fn job_of(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/labels/job-name")?.as_str()
}

fn dns1123(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Db {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        tx: &broadcast::Sender<Change>,
        resource: &'static str,
        namespace: &str,
        kind: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: self.rv,
            resource,
            namespace: namespace.to_string(),
            kind,
            object,
        };
        self.history.push(change.clone());
        let _ = tx.send(change);
    }

    /// The cluster's clock.
    fn clock(&self) -> std::time::Instant {
        std::time::Instant::now() + self.skew
    }

    /// Deletes a Job and (background propagation, the garbage collector)
    /// its pods; the deleted Job.
    fn remove_job(
        &mut self,
        tx: &broadcast::Sender<Change>,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        let key = (ns.to_string(), name.to_string());
        let mut job = self.jobs.remove(&key)?;
        self.finished.remove(&key);
        self.deadlines.remove(&key);
        let rv = self.bump();
        job["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(tx, JOBS, ns, "DELETED", job.clone());
        let keys: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|((pns, _), p)| {
                pns == ns && labels_of(p).get("job-name").map(String::as_str) == Some(name)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(mut pod) = self.pods.remove(&key) {
                let rv = self.bump();
                pod["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.record(tx, PODS, ns, "DELETED", pod);
            }
        }
        Some(job)
    }

    /// The TTL-after-finished controller: deletes finished Jobs whose
    /// `ttlSecondsAfterFinished` passed on the cluster's clock.
    fn expire_finished(&mut self, tx: &broadcast::Sender<Change>) {
        let now = self.clock();
        let due: Vec<(String, String)> = self
            .finished
            .iter()
            .filter(|(k, at)| {
                self.jobs
                    .get(*k)
                    .and_then(|j| j.pointer("/spec/ttlSecondsAfterFinished"))
                    .and_then(Value::as_u64)
                    .is_some_and(|ttl| **at + Duration::from_secs(ttl) <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (ns, name) in due {
            self.remove_job(tx, &ns, &name);
            *self.counts.entry("ttl-delete jobs".into()).or_default() += 1;
        }
    }

    fn count(&mut self, verb: &str, resource: &str) {
        *self.counts.entry(format!("{verb} {resource}")).or_default() += 1;
    }

    fn injected_failure(&mut self, verb: &str, resource: &str) -> Option<u16> {
        if self.down {
            return Some(500);
        }
        let list = self.failures.get_mut(&format!("{verb} {resource}"))?;
        if list.is_empty() {
            None
        } else {
            Some(list.remove(0))
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    watch: Option<String>,
    label_selector: Option<String>,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    timestamps: Option<bool>,
    since_time: Option<String>,
    limit_bytes: Option<usize>,
    tail_lines: Option<usize>,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 on a free port.
    pub async fn start() -> FakeApiServer {
        let (changes, _) = broadcast::channel(65_536);
        let (drop_watches, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            db: Mutex::new(Db {
                node: "node-1".into(),
                ..Db::default()
            }),
            changes,
            drop_watches,
            open_watches: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs",
                get(list_jobs).post(create_job),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                get(get_job).delete(delete_job),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).delete(delete_pod_api),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .fallback(|| async {
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let server = FakeApiServer {
            inner,
            url: format!("http://{addr}"),
        };
        // The Job controller's deadline enforcement.
        let weak = Arc::downgrade(&server.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(inner) = weak.upgrade() else { return };
                let server = FakeApiServer {
                    inner,
                    url: String::new(),
                };
                let due: Vec<String> = {
                    let mut db = server.db();
                    db.expire_finished(&server.inner.changes);
                    let now = db.clock();
                    let due: Vec<(String, String)> = db
                        .deadlines
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in &due {
                        db.deadlines.remove(k);
                    }
                    due.into_iter()
                        .filter(|k| {
                            db.jobs
                                .get(k)
                                .is_some_and(|j| j.pointer("/status/conditions").is_none())
                        })
                        .map(|(_, n)| n)
                        .collect()
                };
                for name in due {
                    server.exceed_deadline(&name);
                }
            }
        });
        server
    }

    /// Moves the cluster's clock `by` forward (deadlines and TTLs see the
    /// time passed) and runs the TTL-after-finished controller at once.
    pub fn advance_clock(&self, by: Duration) {
        let mut db = self.db();
        db.skew += by;
        db.expire_finished(&self.inner.changes);
    }

    /// How many watch streams are being served now (a client that is down
    /// holds none).
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    /// Waits until no watch stream is open: nothing observes the cluster
    /// (a flotilla that is down).
    pub async fn wait_unwatched(&self) {
        for _ in 0..1000 {
            if self.open_watches() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} watches are still open", self.open_watches());
    }

    /// How many pods were ever created for the Job.
    pub fn pods_created(&self, job: &str) -> usize {
        self.db().pods_created.get(job).copied().unwrap_or(0)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("kube client")
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.inner.db.lock().expect("fake db lock")
    }

    /// Requests counted per `"verb resource"` (`create jobs`, `list pods`,
    /// `watch jobs`, `log pods`, ...).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.db().counts.clone()
    }

    /// The count for one `"verb resource"`.
    pub fn count(&self, key: &str) -> u64 {
        self.db().counts.get(key).copied().unwrap_or(0)
    }

    /// Makes the next requests of `"verb resource"` fail with these codes.
    pub fn fail_next(&self, key: &str, codes: &[u16]) {
        self.db()
            .failures
            .entry(key.to_string())
            .or_default()
            .extend_from_slice(codes);
    }

    /// Ends every open watch stream (clients re-watch from their last
    /// resource version).
    pub fn drop_watches(&self) {
        self.inner.drop_watches.send_modify(|g| *g += 1);
    }

    /// While true, new watches fail with 500 (and open ones are dropped).
    pub fn refuse_watches(&self, refuse: bool) {
        self.db().refuse_watches = refuse;
        if refuse {
            self.drop_watches();
        }
    }

    /// While true the whole API is down (a failing cluster): every request
    /// answers 500 (not 503, which the kube client itself retries for
    /// minutes), open watches are dropped and new ones refused.
    pub fn set_unavailable(&self, down: bool) {
        self.db().down = down;
        self.refuse_watches(down);
    }

    /// Forgets the change history: watches from an older resource version
    /// get `410 Gone` and must list again.
    pub fn compact(&self) {
        let mut db = self.db();
        db.compacted_below = db.rv + 1;
        db.history.clear();
    }

    /// The node pods are placed on from now.
    pub fn set_node(&self, node: &str) {
        self.db().node = node.to_string();
    }

    /// A Job by name (any namespace).
    pub fn job(&self, name: &str) -> Option<Value> {
        self.db()
            .jobs
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// All Jobs.
    pub fn jobs(&self) -> Vec<Value> {
        self.db().jobs.values().cloned().collect()
    }

    /// Names of the Jobs whose label `key` is `value`.
    pub fn jobs_labeled(&self, key: &str, value: &str) -> Vec<String> {
        self.db()
            .jobs
            .values()
            .filter(|j| labels_of(j).get(key).map(String::as_str) == Some(value))
            .filter_map(|j| j.pointer("/metadata/name")?.as_str().map(String::from))
            .collect()
    }

    /// The pods of a Job.
    pub fn pods_of(&self, job: &str) -> Vec<Value> {
        self.db()
            .pods
            .values()
            .filter(|p| job_of(p) == Some(job))
            .cloned()
            .collect()
    }

    /// Names of the Jobs that have a pod in `phase` (`Pending`, `Running`,
    /// ...).
    pub fn jobs_with_pod_in(&self, phase: &str) -> Vec<String> {
        self.db()
            .pods
            .values()
            .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some(phase))
            .filter_map(|p| job_of(p).map(String::from))
            .collect()
    }

    /// Waits until the Job exists.
    pub async fn wait_for_job(&self, name: &str) -> Value {
        for _ in 0..1000 {
            if let Some(j) = self.job(name) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {name} was never created");
    }

    /// Waits until a Job with label `key=value` exists; its name.
    pub async fn wait_for_job_labeled(&self, key: &str, value: &str) -> String {
        for _ in 0..1000 {
            if let Some(j) = self.jobs_labeled(key, value).into_iter().next() {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no job labeled {key}={value} was ever created");
    }

    fn update_pods_of<F: Fn(&mut Value, &str)>(&self, job: &str, f: F) {
        let mut db = self.db();
        let keys: Vec<(String, String)> = db
            .pods
            .iter()
            .filter(|(_, p)| job_of(p) == Some(job))
            .map(|(k, _)| k.clone())
            .collect();
        assert!(!keys.is_empty(), "job {job} has no pod");
        let node = db.node.clone();
        for key in keys {
            let rv = db.bump();
            let mut pod = db.pods.get(&key).cloned().expect("pod");
            f(&mut pod, &node);
            pod["metadata"]["resourceVersion"] = json!(rv.to_string());
            db.pods.insert(key.clone(), pod.clone());
            db.record(&self.inner.changes, PODS, &key.0, "MODIFIED", pod);
        }
    }

    fn update_job<F: Fn(&mut Value)>(&self, job: &str, f: F) {
        let mut db = self.db();
        let Some(key) = db.jobs.keys().find(|(_, n)| n == job).cloned() else {
            panic!("no job {job}");
        };
        let rv = db.bump();
        let mut obj = db.jobs.get(&key).cloned().expect("job");
        f(&mut obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        db.jobs.insert(key.clone(), obj.clone());
        db.record(&self.inner.changes, JOBS, &key.0, "MODIFIED", obj);
    }

    /// Kubelet: the Job's pod is scheduled and its container runs. Init
    /// containers came first: the plain ones completed (exit 0), the
    /// native sidecars (`restartPolicy: Always`) run on.
    pub fn start_pod(&self, job: &str) {
        let t = ts(now());
        self.update_pods_of(job, |pod, node| {
            pod["spec"]["nodeName"] = json!(node);
            let inits: Vec<Value> = init_containers(pod)
                .into_iter()
                .map(|(name, sidecar)| {
                    if sidecar {
                        json!({"name": name, "image": "helper", "imageID": "", "ready": true,
                            "started": true, "restartCount": 0,
                            "state": {"running": {"startedAt": t}}})
                    } else {
                        json!({"name": name, "image": "helper", "imageID": "", "ready": true,
                            "restartCount": 0,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                "startedAt": t, "finishedAt": t}}})
                    }
                })
                .collect();
            pod["status"] = json!({
                "phase": "Running",
                "hostIP": "10.0.0.1",
                "startTime": t,
                "containerStatuses": [{
                    "name": "main", "image": "img", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": t}}
                }]
            });
            if !inits.is_empty() {
                pod["status"]["initContainerStatuses"] = json!(inits);
            }
        });
        self.update_job(job, |j| j["status"]["ready"] = json!(1));
    }

    /// Kubelet: the container exits with `exit_code` and `reason`, the
    /// pod's sidecars (if any) are stopped and exit 0; the Job controller
    /// marks the Job Complete or Failed.
    pub fn finish_pod(&self, job: &str, exit_code: i32, reason: &str) {
        self.exit_main(job, exit_code, reason);
        let sidecars: Vec<String> = self
            .pods_of(job)
            .first()
            .map(|p| {
                init_containers(p)
                    .into_iter()
                    .filter(|(_, sidecar)| *sidecar)
                    .map(|(n, _)| n)
                    .collect()
            })
            .unwrap_or_default();
        for name in sidecars {
            self.stop_sidecar(job, &name, 0, "");
        }
    }

    /// Kubelet: the job container exits with `exit_code` and `reason`. A
    /// pod whose native sidecars still run stays `Running` (the kubelet
    /// now sends them SIGTERM; see [`FakeApiServer::stop_sidecar`]); one
    /// without becomes `Succeeded` or `Failed` and its Job finishes.
    pub fn exit_main(&self, job: &str, exit_code: i32, reason: &str) {
        let t = ts(now());
        let settled = std::sync::Mutex::new(None);
        self.update_pods_of(job, |pod, node| {
            if pod["spec"]["nodeName"].is_null() {
                pod["spec"]["nodeName"] = json!(node);
            }
            let started = pod["status"]["startTime"].clone();
            pod["status"]["containerStatuses"] = json!([{
                "name": "main", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started, "finishedAt": t
                }}
            }]);
            *settled.lock().expect("settled") = settle(pod);
        });
        self.settled(job, settled.into_inner().expect("settled"));
    }

    /// Kubelet: the native sidecar `name` stopped (after SIGTERM) with
    /// `exit_code`, its termination message `message` (what it wrote to
    /// its `terminationMessagePath`). Once every regular container ended
    /// and no sidecar runs, the pod's phase is decided by the regular
    /// containers only (a sidecar's exit code never counts), and the Job
    /// finishes.
    pub fn stop_sidecar(&self, job: &str, name: &str, exit_code: i32, message: &str) {
        let t = ts(now());
        let settled = std::sync::Mutex::new(None);
        self.update_pods_of(job, |pod, _| {
            let statuses = pod["status"]["initContainerStatuses"]
                .as_array_mut()
                .expect("the pod's init containers started");
            let status = statuses
                .iter_mut()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no init container {name}"));
            let started = status.pointer("/state/running/startedAt").cloned();
            status["ready"] = json!(false);
            status["state"] = json!({"terminated": {
                "exitCode": exit_code,
                "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "message": message,
                "startedAt": started, "finishedAt": t
            }});
            if message.is_empty() {
                status["state"]["terminated"]
                    .as_object_mut()
                    .expect("terminated")
                    .remove("message");
            }
            *settled.lock().expect("settled") = settle(pod);
        });
        self.settled(job, settled.into_inner().expect("settled"));
    }

    /// Kubelet: the init container `name` (not a sidecar) failed with
    /// `exit_code` and `message`: the job container never starts, the pod
    /// fails (restartPolicy Never), the Job fails.
    pub fn fail_init(&self, job: &str, name: &str, exit_code: i32, message: &str) {
        let t = ts(now());
        self.update_pods_of(job, |pod, node| {
            pod["spec"]["nodeName"] = json!(node);
            let inits: Vec<Value> = init_containers(pod)
                .into_iter()
                .map(|(n, _)| {
                    let state = if n == name {
                        json!({"terminated": {"exitCode": exit_code, "reason": "Error",
                            "message": message, "startedAt": t, "finishedAt": t}})
                    } else {
                        json!({"waiting": {"reason": "PodInitializing"}})
                    };
                    json!({"name": n, "image": "helper", "imageID": "", "ready": false,
                        "restartCount": 0, "state": state})
                })
                .collect();
            pod["status"] = json!({
                "phase": "Failed",
                "startTime": t,
                "initContainerStatuses": inits,
                "containerStatuses": [{
                    "name": "main", "image": "img", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}
                }]
            });
        });
        self.job_finished(
            job,
            false,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
    }

    /// The Job controller's reaction to a pod that reached a phase.
    fn settled(&self, job: &str, ok: Option<bool>) {
        if let Some(ok) = ok {
            self.job_finished(
                job,
                ok,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            );
        }
    }

    fn job_finished(&self, job: &str, ok: bool, reason: &str, message: &str) {
        let t = ts(now());
        {
            let mut db = self.db();
            let at = db.clock();
            if let Some(key) = db.jobs.keys().find(|(_, n)| n == job).cloned() {
                db.finished.entry(key).or_insert(at);
            }
        }
        self.update_job(job, |j| {
            j["status"]["active"] = json!(0);
            j["status"]["ready"] = json!(0);
            if ok {
                j["status"]["succeeded"] = json!(1);
                j["status"]["completionTime"] = json!(t);
                j["status"]["conditions"] = json!([
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t},
                    {"type": "Complete", "status": "True", "lastTransitionTime": t}
                ]);
            } else {
                j["status"]["failed"] = json!(1);
                j["status"]["conditions"] = json!([
                    {"type": "FailureTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": t},
                    {"type": "Failed", "status": "True", "reason": reason, "message": message, "lastTransitionTime": t}
                ]);
            }
        });
    }

    /// Kubelet: the container is killed for exceeding its memory limit.
    pub fn oom_kill(&self, job: &str) {
        self.finish_pod(job, 137, "OOMKilled");
    }

    /// Kubelet: the pod is evicted (phase Failed, reason Evicted).
    pub fn evict(&self, job: &str) {
        let t = ts(now());
        self.update_pods_of(job, |pod, _| {
            pod["status"]["phase"] = json!("Failed");
            pod["status"]["reason"] = json!("Evicted");
            pod["status"]["message"] = json!("The node was low on resource: memory.");
            pod["status"]["containerStatuses"] = json!([{
                "name": "main", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": t}}
            }]);
        });
        self.job_finished(
            job,
            false,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
    }

    /// The node goes away: the Job's pods are deleted while it runs.
    pub fn delete_pods(&self, job: &str) {
        let mut db = self.db();
        let keys: Vec<(String, String)> = db
            .pods
            .iter()
            .filter(|(_, p)| job_of(p) == Some(job))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(mut pod) = db.pods.remove(&key) {
                let rv = db.bump();
                pod["metadata"]["resourceVersion"] = json!(rv.to_string());
                db.record(&self.inner.changes, PODS, &key.0, "DELETED", pod);
            }
        }
    }

    /// Kubelet: the image cannot be pulled (container waiting in
    /// ImagePullBackOff).
    pub fn image_pull_backoff(&self, job: &str) {
        self.update_pods_of(job, |pod, node| {
            pod["spec"]["nodeName"] = json!(node);
            pod["status"]["containerStatuses"] = json!([{
                "name": "main", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"img\""}}
            }]);
        });
    }

    /// Job controller: `activeDeadlineSeconds` passed; the pods are killed.
    pub fn exceed_deadline(&self, job: &str) {
        let t = ts(now());
        self.update_job(job, |j| {
            j["status"]["conditions"] = json!([{
                "type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline", "lastTransitionTime": t
            }]);
        });
        self.delete_pods(job);
        self.job_finished(
            job,
            false,
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        );
    }

    /// Kubelet: the Job's pod writes `line` now.
    pub fn append_log(&self, job: &str, line: &str) {
        self.append_log_at(job, now(), line);
    }

    /// Kubelet: the Job's pod writes `line` stamped `at`.
    pub fn append_log_at(&self, job: &str, at: DateTime<Utc>, line: &str) {
        let mut db = self.db();
        let key = db
            .pods
            .iter()
            .find(|(_, p)| job_of(p) == Some(job))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| panic!("job {job} has no pod"));
        db.logs.entry(key).or_default().push((at, line.to_string()));
    }
}

type Shared = State<Arc<Inner>>;

/// The init containers of a pod (or pod spec holder), in order: name and
/// whether it is a native sidecar (`restartPolicy: Always`).
fn init_containers(pod: &Value) -> Vec<(String, bool)> {
    pod.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["restartPolicy"] == "Always",
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Kubelet: a pod whose regular containers all terminated and whose
/// sidecars all stopped gets its terminal phase, decided by the regular
/// containers alone: `Succeeded` when every one exited 0. Returns whether
/// it succeeded, `None` while it is not terminal.
fn settle(pod: &mut Value) -> Option<bool> {
    let regular = pod.pointer("/status/containerStatuses")?.as_array()?;
    let mut ok = true;
    for c in regular {
        let code = c.pointer("/state/terminated/exitCode")?.as_i64()?;
        ok &= code == 0;
    }
    let sidecar_runs = init_containers(pod).into_iter().any(|(name, sidecar)| {
        sidecar
            && pod
                .pointer("/status/initContainerStatuses")
                .and_then(Value::as_array)
                .and_then(|s| s.iter().find(|c| c["name"] == name.as_str()))
                .is_none_or(|c| c.pointer("/state/terminated").is_none())
    });
    if sidecar_runs {
        return None;
    }
    pod["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
    Some(ok)
}

/// What the API server's validation refuses in a pod template and the
/// engine could send: a volume mount naming no volume, an init container's
/// `restartPolicy` other than `Always`, two containers of one name.
fn invalid_pod_spec(spec: &Value) -> Option<String> {
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    let mut names = Vec::new();
    for (field, sidecars_allowed) in [("initContainers", true), ("containers", false)] {
        for (i, c) in spec[field].as_array().into_iter().flatten().enumerate() {
            let name = c["name"].as_str().unwrap_or_default();
            if names.contains(&name) {
                return Some(format!(
                    "spec.template.spec.{field}[{i}].name: Duplicate value: \"{name}\""
                ));
            }
            names.push(name);
            match c["restartPolicy"].as_str() {
                None => {}
                Some("Always") if sidecars_allowed => {}
                Some(p) => {
                    return Some(format!(
                        "spec.template.spec.{field}[{i}].restartPolicy: Unsupported value: \"{p}\""
                    ));
                }
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let v = m["name"].as_str().unwrap_or_default();
                if !volumes.contains(&v) {
                    return Some(format!(
                        "spec.template.spec.{field}[{i}].volumeMounts[{j}].name: Not found: \"{v}\""
                    ));
                }
            }
        }
    }
    None
}

fn lock(inner: &Inner) -> MutexGuard<'_, Db> {
    inner.db.lock().expect("fake db lock")
}

async fn create_job(State(inner): Shared, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut db = lock(&inner);
    db.count("create", JOBS);
    if let Some(code) = db.injected_failure("create", JOBS) {
        return injected(code);
    }
    let Ok(mut job) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the body is not JSON");
    };
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !dns1123(&name) {
        return status(
            422,
            "Invalid",
            &format!(
                "Job.batch \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
            ),
        );
    }
    let image = job
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if image.is_empty() {
        return status(
            422,
            "Invalid",
            &format!(
                "Job.batch \"{name}\" is invalid: spec.template.spec.containers[0].image: Required value"
            ),
        );
    }
    if let Some(why) = job
        .pointer("/spec/template/spec")
        .and_then(invalid_pod_spec)
    {
        return status(
            422,
            "Invalid",
            &format!("Job.batch \"{name}\" is invalid: {why}"),
        );
    }
    let key = (ns.clone(), name.clone());
    if db.jobs.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("jobs.batch \"{name}\" already exists"),
        );
    }
    let rv = db.bump();
    let uid = format!("uid-{rv}");
    let t = ts(now());
    job["apiVersion"] = json!("batch/v1");
    job["kind"] = json!("Job");
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["uid"] = json!(uid);
    job["metadata"]["resourceVersion"] = json!(rv.to_string());
    job["metadata"]["creationTimestamp"] = json!(t);
    job["status"] = json!({"active": 1, "startTime": t, "ready": 0});
    if let Some(secs) = job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
    {
        let at = db.clock() + Duration::from_secs(secs);
        db.deadlines.insert(key.clone(), at);
    }
    db.jobs.insert(key, job.clone());
    db.record(&inner.changes, JOBS, &ns, "ADDED", job.clone());
    *db.pods_created.entry(name.clone()).or_default() += 1;

    // The Job controller creates the pod.
    db.suffix += 1;
    let pod_name = format!("{name}-{:05x}", db.suffix % 0xfffff);
    let mut labels = job
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels["job-name"] = json!(name);
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["controller-uid"] = json!(uid);
    let rv = db.bump();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "namespace": ns, "uid": format!("uid-{rv}"),
            "resourceVersion": rv.to_string(), "creationTimestamp": t,
            "labels": labels,
            "annotations": job.pointer("/spec/template/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true}]
        },
        "spec": job.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        "status": {"phase": "Pending"}
    });
    db.pods.insert((ns.clone(), pod_name), pod.clone());
    db.record(&inner.changes, PODS, &ns, "ADDED", pod);
    (StatusCode::CREATED, axum::Json(job)).into_response()
}

async fn get_job(State(inner): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut db = lock(&inner);
    db.count("get", JOBS);
    if let Some(code) = db.injected_failure("get", JOBS) {
        return injected(code);
    }
    match db.jobs.get(&(ns, name.clone())) {
        Some(j) => axum::Json(j.clone()).into_response(),
        None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(State(inner): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut db = lock(&inner);
    db.count("delete", JOBS);
    if let Some(code) = db.injected_failure("delete", JOBS) {
        return injected(code);
    }
    // Background propagation: the garbage collector deletes the pods.
    let Some(job) = db.remove_job(&inner.changes, &ns, &name) else {
        return status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
    };
    axum::Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": "batch", "kind": "jobs", "uid": job["metadata"]["uid"]}
    }))
    .into_response()
}

async fn list_jobs(
    State(inner): Shared,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch(inner, JOBS, "batch/v1", "JobList", ns, q).await
}

async fn list_pods(
    State(inner): Shared,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch(inner, PODS, "v1", "PodList", ns, q).await
}

async fn list_or_watch(
    inner: Arc<Inner>,
    resource: &'static str,
    api_version: &str,
    list_kind: &str,
    ns: String,
    q: ListQuery,
) -> Response {
    let selector = q.label_selector.clone().unwrap_or_default();
    let watching = matches!(q.watch.as_deref(), Some("true" | "1"));
    let mut db = lock(&inner);
    if !watching {
        db.count("list", resource);
        if let Some(code) = db.injected_failure("list", resource) {
            return injected(code);
        }
        let objects = if resource == JOBS { &db.jobs } else { &db.pods };
        let items: Vec<Value> = objects
            .iter()
            .filter(|((n, _), o)| *n == ns && selector_matches(&selector, &labels_of(o)))
            .map(|(_, o)| o.clone())
            .collect();
        return axum::Json(json!({
            "apiVersion": api_version, "kind": list_kind,
            "metadata": {"resourceVersion": db.rv.to_string()},
            "items": items,
        }))
        .into_response();
    }
    db.count("watch", resource);
    if db.refuse_watches {
        return status(500, "InternalError", "watches are refused");
    }
    let from: u64 = q
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(db.rv);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    if from + 1 < db.compacted_below {
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", db.compacted_below),
            "reason": "Expired", "code": 410
        }});
        let _ = tx.try_send(Ok(Bytes::from(format!("{gone}\n"))));
        drop(tx);
        return Response::new(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
    }
    let matches = {
        let ns = ns.clone();
        let selector = selector.clone();
        move |c: &Change| {
            c.resource == resource
                && c.namespace == ns
                && selector_matches(&selector, &labels_of(&c.object))
        }
    };
    let backlog: Vec<Change> = db
        .history
        .iter()
        .filter(|c| c.rv > from && matches(c))
        .cloned()
        .collect();
    let mut live = inner.changes.subscribe();
    let mut dropped = inner.drop_watches.subscribe();
    drop(db);
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(290).max(1));
    let open = OpenWatch::new(&inner);
    tokio::spawn(async move {
        let _open = open;
        let line = |c: &Change| {
            Ok::<_, Infallible>(Bytes::from(format!(
                "{}\n",
                json!({"type": c.kind, "object": c.object})
            )))
        };
        let mut last = from;
        for c in &backlog {
            last = c.rv;
            if tx.send(line(c)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = dropped.changed() => return,
                _ = tx.closed() => return,
                c = live.recv() => match c {
                    Ok(c) if c.rv > last && matches(&c) => {
                        last = c.rv;
                        if tx.send(line(&c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Lagging or closed: end the stream; the client re-watches.
                    Err(_) => return,
                }
            }
        }
    });
    Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

async fn get_pod(State(inner): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut db = lock(&inner);
    db.count("get", PODS);
    if let Some(code) = db.injected_failure("get", PODS) {
        return injected(code);
    }
    match db.pods.get(&(ns, name.clone())) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod_api(
    State(inner): Shared,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut db = lock(&inner);
    db.count("delete", PODS);
    if let Some(code) = db.injected_failure("delete", PODS) {
        return injected(code);
    }
    let Some(mut pod) = db.pods.remove(&(ns.clone(), name.clone())) else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    let rv = db.bump();
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    db.record(&inner.changes, PODS, &ns, "DELETED", pod.clone());
    axum::Json(pod).into_response()
}

async fn pod_log(
    State(inner): Shared,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let mut db = lock(&inner);
    db.count("log", PODS);
    if let Some(code) = db.injected_failure("log", PODS) {
        return injected(code);
    }
    let key = (ns, name.clone());
    let Some(pod) = db.pods.get(&key) else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    if pod
        .pointer("/status/containerStatuses/0/state/running")
        .is_none()
        && pod
            .pointer("/status/containerStatuses/0/state/terminated")
            .is_none()
    {
        return status(
            400,
            "BadRequest",
            &format!("container \"main\" in pod \"{name}\" is waiting to start: ContainerCreating"),
        );
    }
    let since = match q.since_time.as_deref() {
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => return status(400, "BadRequest", &format!("sinceTime: cannot parse {s}")),
        },
        None => None,
    };
    let lines: Vec<&LogLine> = db
        .logs
        .get(&key)
        .map(|l| {
            l.iter()
                .filter(|(t, _)| since.is_none_or(|s| *t >= s))
                .collect()
        })
        .unwrap_or_default();
    let skip = q
        .tail_lines
        .map(|n| lines.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = String::new();
    for (t, line) in lines.into_iter().skip(skip) {
        if q.timestamps.unwrap_or(false) {
            out.push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            out.push(' ');
        }
        out.push_str(line);
        out.push('\n');
    }
    // Like the API server: cut at the byte count, even inside a character.
    let mut out = out.into_bytes();
    if let Some(limit) = q.limit_bytes {
        out.truncate(limit);
    }
    (StatusCode::OK, out).into_response()
}
