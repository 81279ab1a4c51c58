//! The `batch/v1` Job of a run attempt.

use std::collections::BTreeMap;

use flotilla::{Definition, Error, Result, Run};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec,
    ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{
    self, ANNOTATION_ATTEMPT, ANNOTATION_RUN_ID, LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_OWNER,
    LABEL_RUN_ID, MANAGED_BY, MANAGED_BY_VALUE,
};
use crate::settings::{EksArtifacts, EksSettings};

/// GPU resource name.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The one container's name.
pub const CONTAINER: &str = "main";
/// Run label that picks the service account, among the cluster's
/// [`crate::EksCluster::allowed_service_accounts`].
pub const RUN_LABEL_SERVICE_ACCOUNT: &str = "service-account";
/// Prefix of the label keys a run's own labels get on its Job and pods:
/// `user.flotilla.io/<key>`, `<key>` made a valid label name (characters
/// other than `[A-Za-z0-9._-]`, `/` included, become `_`; at most 63).
/// Never bare keys, so a run's labels cannot match the selectors of
/// NetworkPolicies or Services in the namespace.
pub const USER_LABEL_PREFIX: &str = "user.flotilla.io/";
/// Run label that picks spot or on-demand capacity.
pub const RUN_LABEL_CAPACITY_TYPE: &str = "capacity-type";

/// With artifacts: the init container that fetches and unpacks the run's
/// input into [`INPUT_PATH`] (only for a run with an `input_url`).
pub const PULL_CONTAINER: &str = "flotilla-pull";
/// With artifacts: the native sidecar (an init container with
/// `restartPolicy: Always`) that, once the kubelet stops it after the job
/// exited (SIGTERM), zips [`OUTPUT_PATH`] and uploads it.
pub const UPLOAD_CONTAINER: &str = "flotilla-upload";
/// Volume (`emptyDir`) of the input.
pub const INPUT_VOLUME: &str = "flotilla-input";
/// Volume (`emptyDir`) of the output.
pub const OUTPUT_VOLUME: &str = "flotilla-output";
/// Where the job sees its input (read only): `FLOTILLA_INPUT_DIR`.
pub const INPUT_PATH: &str = "/input";
/// Where the job writes its output: `FLOTILLA_OUTPUT_DIR`.
pub const OUTPUT_PATH: &str = "/output";
/// Where the upload step writes its result (the URL it uploaded, `empty`,
/// or its error): the container's `terminationMessagePath`, which the
/// kubelet copies into the terminated state's `message`.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Pod annotation: the attempt's output URL (what the upload step writes).
pub const ANNOTATION_OUTPUT_URL: &str = "flotilla.io/output-url";
/// Pod annotation `"true"`: a failed attempt's output is not reported
/// (the definition's `skip_failed_output`).
pub const ANNOTATION_SKIP_FAILED_OUTPUT: &str = "flotilla.io/skip-failed-output";
/// Variable naming the input directory, in the job container.
pub const ENV_INPUT_DIR: &str = "FLOTILLA_INPUT_DIR";
/// Variable naming the output directory, in the job container.
pub const ENV_OUTPUT_DIR: &str = "FLOTILLA_OUTPUT_DIR";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The helpers' store settings, as the flotilla binary reads them
/// (`FLOTILLA_ARTIFACTS__*`): the store's location and limits, no secret.
fn helper_env(a: &EksArtifacts) -> Vec<EnvVar> {
    let mut v = vec![env("FLOTILLA_ARTIFACTS__URL", a.store_url.clone())];
    if let Some(r) = &a.region {
        v.push(env("FLOTILLA_ARTIFACTS__REGION", r.clone()));
    }
    if let Some(e) = &a.endpoint {
        v.push(env("FLOTILLA_ARTIFACTS__ENDPOINT", e.clone()));
    }
    if let Some(n) = a.max_total_bytes {
        v.push(env("FLOTILLA_ARTIFACTS__MAX_TOTAL_BYTES", n.to_string()));
    }
    if let Some(n) = a.max_entries {
        v.push(env("FLOTILLA_ARTIFACTS__MAX_ENTRIES", n.to_string()));
    }
    if let Some(n) = a.max_ratio {
        v.push(env("FLOTILLA_ARTIFACTS__MAX_RATIO", n.to_string()));
    }
    v
}

fn helper(a: &EksArtifacts, name: &str, args: Vec<String>, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: name.to_string(),
        image: Some(a.helper_image.clone()),
        command: Some(vec!["flotilla".to_string()]),
        args: Some(args),
        env: Some(helper_env(a)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// What an artifacts-enabled engine adds to the pod of `run`'s attempt:
/// the volumes, the job container's mounts and env, the init containers
/// (the input's pull when the run has one, then the upload sidecar) and
/// the artifact annotations. `InvalidInput` when the run has an input but
/// the engine no artifacts, or an input outside the helpers' store.
struct ArtifactParts {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
    init_containers: Vec<Container>,
    annotations: BTreeMap<String, String>,
    grace: i64,
}

fn artifact_parts(run: &Run, settings: &EksSettings) -> Result<Option<ArtifactParts>> {
    let Some(a) = &settings.artifacts else {
        if run.input_url.is_some() {
            return Err(Error::invalid(format!(
                "input_url: engine '{}' has no artifacts helper configured",
                settings.engine_name
            )));
        }
        return Ok(None);
    };
    let base = format!("{}/", a.store_url.trim_end_matches('/'));
    let mut init_containers = Vec::new();
    if let Some(url) = &run.input_url {
        if !url.starts_with(&base) {
            return Err(Error::invalid(format!(
                "input_url: {url:?} is not inside the artifact store of engine '{}' ({})",
                settings.engine_name, a.store_url
            )));
        }
        init_containers.push(helper(
            a,
            PULL_CONTAINER,
            vec![
                "artifacts".into(),
                "pull".into(),
                url.clone(),
                INPUT_PATH.into(),
            ],
            vec![mount(INPUT_VOLUME, INPUT_PATH, false)],
        ));
    }
    let output_url = a.output_url(&run.run_id, run.attempt);
    let mut upload = helper(
        a,
        UPLOAD_CONTAINER,
        vec![
            "artifacts".into(),
            "push".into(),
            OUTPUT_PATH.into(),
            output_url.clone(),
            "--on-sigterm".into(),
            "--result-file".into(),
            TERMINATION_LOG.into(),
        ],
        vec![mount(OUTPUT_VOLUME, OUTPUT_PATH, true)],
    );
    // A native sidecar (Kubernetes >= 1.29): started before the job, not
    // counted in the pod's phase, stopped (SIGTERM) once the job exited.
    upload.restart_policy = Some("Always".into());
    init_containers.push(upload);
    let empty = |name: &str| Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mut annotations = BTreeMap::from([(ANNOTATION_OUTPUT_URL.to_string(), output_url)]);
    if run.skip_failed_output {
        annotations.insert(ANNOTATION_SKIP_FAILED_OUTPUT.to_string(), "true".into());
    }
    Ok(Some(ArtifactParts {
        volumes: vec![empty(INPUT_VOLUME), empty(OUTPUT_VOLUME)],
        mounts: vec![
            mount(INPUT_VOLUME, INPUT_PATH, true),
            mount(OUTPUT_VOLUME, OUTPUT_PATH, false),
        ],
        env: vec![
            env(ENV_INPUT_DIR, INPUT_PATH),
            env(ENV_OUTPUT_DIR, OUTPUT_PATH),
        ],
        init_containers,
        annotations,
        grace: a.upload_grace_seconds.max(1),
    }))
}

/// Labels of the Job and its pods.
pub fn labels(run: &Run) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for (k, v) in &run.labels {
        let name = names::label_value(k);
        if !name.is_empty() {
            l.insert(format!("{USER_LABEL_PREFIX}{name}"), names::label_value(v));
        }
    }
    l.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    l.insert(LABEL_RUN_ID.into(), names::label_value(&run.run_id));
    l.insert(LABEL_ATTEMPT.into(), run.attempt.to_string());
    l.insert(LABEL_OWNER.into(), names::label_value(&run.owner));
    l.insert(LABEL_CLUSTER.into(), names::label_value(&run.cluster));
    l
}

/// Annotations of the Job and its pods: the exact run id and attempt.
pub fn annotations(run: &Run) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_RUN_ID.to_string(), run.run_id.clone()),
        (ANNOTATION_ATTEMPT.to_string(), run.attempt.to_string()),
    ])
}

/// The service account of `run`'s pod: `default` (the cluster's), or the
/// one the run's label `service-account` names when it is `default` or
/// one of the cluster's [`crate::EksCluster::allowed_service_accounts`].
/// Any other is refused: a permanent `InvalidInput` naming
/// `labels.service-account` (the label would otherwise pick any IAM role
/// bound to any account in the namespace).
pub fn service_account(
    run: &Run,
    settings: &EksSettings,
    default: Option<&str>,
) -> Result<Option<String>> {
    let Some(wanted) = run.labels.get(RUN_LABEL_SERVICE_ACCOUNT) else {
        return Ok(default.map(String::from));
    };
    let allowed = settings
        .clusters
        .iter()
        .find(|c| c.name == run.cluster)
        .map_or(&[][..], |c| c.allowed_service_accounts.as_slice());
    if default == Some(wanted.as_str()) || allowed.iter().any(|a| a == wanted) {
        return Ok(Some(wanted.clone()));
    }
    let mut choices: Vec<&str> = default
        .into_iter()
        .chain(allowed.iter().map(String::as_str))
        .collect();
    choices.sort_unstable();
    choices.dedup();
    Err(Error::invalid(format!(
        "labels.{RUN_LABEL_SERVICE_ACCOUNT}: service account '{wanted}' is not allowed on cluster \
         '{}' (allowed: {})",
        run.cluster,
        if choices.is_empty() {
            "only the namespace's default".to_string()
        } else {
            choices.join(", ")
        }
    )))
}

/// The Job for the run's current attempt, in `namespace`, with the
/// cluster's `service_account` unless the run's label picks an allowed
/// other ([`service_account`]; an account not allowed is an error).
pub fn job(
    run: &Run,
    def: &Definition,
    settings: &EksSettings,
    namespace: &str,
    service_account: Option<&str>,
) -> Result<Job> {
    let service_account = self::service_account(run, settings, service_account)?;
    let artifacts = artifact_parts(run, settings)?;
    let name = names::job_name(&run.run_id, run.attempt);
    let labels = labels(run);
    let mut annotations = annotations(run);
    if let Some(a) = &artifacts {
        annotations.extend(a.annotations.clone());
    }

    let mut env: Vec<EnvVar> = run
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            ..Default::default()
        })
        .collect();
    for e in &def.env {
        if !run.env.iter().any(|r| r.name == e.name) {
            env.push(EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                ..Default::default()
            });
        }
    }
    if let Some(a) = &artifacts {
        env.retain(|e| e.name != ENV_INPUT_DIR && e.name != ENV_OUTPUT_DIR);
        env.extend(a.env.clone());
    }

    let mut quantities = BTreeMap::new();
    if let Some(cpu) = run.cpu.filter(|c| *c > 0) {
        quantities.insert("cpu".to_string(), Quantity(format!("{cpu}m")));
    }
    if let Some(mem) = run.memory.filter(|m| *m > 0) {
        quantities.insert("memory".to_string(), Quantity(format!("{mem}Mi")));
    }
    let gpu = run.gpu.filter(|g| *g > 0);
    let mut limits = quantities.clone();
    let mut requests = quantities;
    let mut tolerations = Vec::new();
    if let Some(g) = gpu {
        limits.insert(GPU_RESOURCE.into(), Quantity(g.to_string()));
        requests.insert(GPU_RESOURCE.into(), Quantity(g.to_string()));
        tolerations.push(Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(limits),
        requests: Some(requests),
        ..Default::default()
    });

    let ports: Vec<ContainerPort> = def
        .ports
        .iter()
        .map(|p| ContainerPort {
            container_port: i32::from(*p),
            ..Default::default()
        })
        .collect();

    let command = run
        .command
        .as_ref()
        .filter(|c| !c.trim().is_empty())
        .map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()]);

    let capacity = run
        .labels
        .get(RUN_LABEL_CAPACITY_TYPE)
        .cloned()
        .or_else(|| settings.default_capacity_type.clone());
    let node_selector = capacity
        .map(|c| BTreeMap::from([(settings.capacity_type_label.clone(), names::label_value(&c))]));

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(settings.ttl_seconds),
            active_deadline_seconds: run.active_deadline_seconds.filter(|d| *d > 0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: service_account,
                    scheduler_name: settings.scheduler_name.clone(),
                    node_selector,
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    containers: vec![Container {
                        name: CONTAINER.into(),
                        image: Some(run.image.clone()),
                        command,
                        env: (!env.is_empty()).then_some(env),
                        resources,
                        ports: (!ports.is_empty()).then_some(ports),
                        volume_mounts: artifacts.as_ref().map(|a| a.mounts.clone()),
                        ..Default::default()
                    }],
                    termination_grace_period_seconds: artifacts.as_ref().map(|a| a.grace),
                    volumes: artifacts.as_ref().map(|a| a.volumes.clone()),
                    init_containers: artifacts.map(|a| a.init_containers),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla::{EnvVar as FEnv, NewDefinition};

    fn run(def: &Definition) -> Run {
        let mut r = Run::queued(def, "east", "eks", "alice@example.com");
        r.run_id = "0193a4f2-7c1e-7b3a-9d2e-4f5a6b7c8d9e".into();
        r.group_name = String::new();
        r.env = vec![FEnv::new("FLOTILLA_RUN_ID", "x"), FEnv::new("A", "run")];
        r.command = Some("echo $A".into());
        r.memory = Some(512);
        r.cpu = Some(250);
        r.gpu = Some(1);
        r.attempt = 2;
        r.labels = [
            ("team".to_string(), "data eng".to_string()),
            ("capacity-type".to_string(), "spot".to_string()),
            ("flotilla-run-id".to_string(), "forged".to_string()),
        ]
        .into();
        r.active_deadline_seconds = Some(600);
        r
    }

    #[test]
    fn the_job_carries_the_run() {
        let mut def = NewDefinition::new("a", "busybox:1").into_definition();
        def.env = vec![FEnv::new("A", "def"), FEnv::new("B", "def")];
        def.ports = vec![8080];
        let r = run(&def);
        let settings = EksSettings {
            scheduler_name: Some("bin-packer".into()),
            ..EksSettings::default()
        };
        let job = job(&r, &def, &settings, "batch", Some("runner")).expect("job");
        let v = serde_json::to_value(&job).expect("json");
        assert_eq!(v["metadata"]["name"], format!("flotilla-{}-a2", r.run_id));
        assert_eq!(v["metadata"]["labels"]["flotilla-attempt"], "2");
        assert_eq!(
            v["metadata"]["labels"]["flotilla-run-id"],
            r.run_id.as_str()
        );
        assert_eq!(
            v["metadata"]["labels"]["flotilla-owner"],
            "alice_example.com"
        );
        assert_eq!(v["metadata"]["labels"]["user.flotilla.io/team"], "data_eng");
        assert_eq!(v["metadata"]["namespace"], "batch");
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert_eq!(v["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(v["spec"]["ttlSecondsAfterFinished"], 3600);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "runner");
        assert_eq!(pod["schedulerName"], "bin-packer");
        assert_eq!(pod["nodeSelector"]["karpenter.sh/capacity-type"], "spot");
        assert_eq!(pod["tolerations"][0]["key"], GPU_RESOURCE);
        let c = &pod["containers"][0];
        assert_eq!(
            c["command"],
            serde_json::json!(["/bin/sh", "-c", "echo $A"])
        );
        assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(c["resources"]["requests"]["cpu"], "250m");
        assert_eq!(c["resources"]["limits"][GPU_RESOURCE], "1");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert!(
            env.contains(&("A".into(), "run".into())),
            "run env wins: {env:?}"
        );
        assert!(env.contains(&("B".into(), "def".into())), "{env:?}");
        assert!(env.iter().any(|(n, _)| n == "FLOTILLA_RUN_ID"));
    }
    fn cluster(name: &str, allowed: &[&str]) -> crate::EksCluster {
        crate::EksCluster {
            name: name.into(),
            allowed_service_accounts: allowed.iter().map(|a| a.to_string()).collect(),
            ..crate::EksCluster::default()
        }
    }

    #[test]
    fn a_service_account_label_picks_only_an_allowed_account() {
        let def = NewDefinition::new("a", "busybox:1").into_definition();
        let settings = EksSettings {
            clusters: vec![cluster("east", &["reports"]), cluster("west", &[])],
            ..EksSettings::default()
        };
        let sa = |cluster: &str, label: Option<&str>| {
            let mut r = run(&def);
            r.cluster = cluster.into();
            if let Some(l) = label {
                r.labels.insert(RUN_LABEL_SERVICE_ACCOUNT.into(), l.into());
            }
            job(&r, &def, &settings, "batch", Some("runner")).map(|j| {
                serde_json::to_value(&j).expect("json")["spec"]["template"]["spec"]
                    ["serviceAccountName"]
                    .clone()
            })
        };
        assert_eq!(sa("east", None).expect("default"), "runner");
        assert_eq!(sa("east", Some("runner")).expect("the default"), "runner");
        assert_eq!(sa("east", Some("reports")).expect("allowed"), "reports");
        for (cluster, label) in [("east", "admin"), ("west", "reports"), ("north", "reports")] {
            let e = sa(cluster, Some(label)).expect_err(label);
            assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput, "{e}");
            assert!(
                e.message().starts_with("labels.service-account:"),
                "{}",
                e.message()
            );
        }
        // No default anywhere: any label is refused.
        let mut r = run(&def);
        r.labels
            .insert(RUN_LABEL_SERVICE_ACCOUNT.into(), "default".into());
        assert!(job(&r, &def, &EksSettings::default(), "batch", None).is_err());
    }

    #[test]
    fn user_labels_are_namespaced_never_bare() {
        let def = NewDefinition::new("a", "busybox:1").into_definition();
        let mut r = run(&def);
        r.labels = [
            ("app", "web"),
            ("app.kubernetes.io/managed-by", "someone"),
            ("example.com/tier", "db"),
            ("flotilla-run-id", "forged"),
            ("job-name", "other"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let j = job(&r, &def, &EksSettings::default(), "batch", None).expect("job");
        let pod_labels = j
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        for labels in [j.metadata.labels.clone().expect("labels"), pod_labels] {
            for (k, v) in &labels {
                let ours = k.starts_with(USER_LABEL_PREFIX)
                    || k.starts_with("flotilla-")
                    || k == crate::names::MANAGED_BY;
                assert!(ours, "bare label {k}={v}");
            }
            assert_eq!(labels["user.flotilla.io/app"], "web");
            assert_eq!(labels["user.flotilla.io/example.com_tier"], "db");
            assert_eq!(labels["user.flotilla.io/flotilla-run-id"], "forged");
            assert_eq!(labels["flotilla-run-id"], r.run_id);
            assert_eq!(labels[crate::names::MANAGED_BY], "flotilla");
            assert!(!labels.contains_key("app") && !labels.contains_key("job-name"));
        }
    }

    fn artifact_settings() -> EksSettings {
        EksSettings {
            artifacts: Some(EksArtifacts {
                helper_image: "flotilla:1".into(),
                store_url: "s3://bucket/prefix".into(),
                region: Some("eu-west-1".into()),
                ..EksArtifacts::default()
            }),
            ..EksSettings::default()
        }
    }

    #[test]
    fn an_artifacts_job_has_the_volumes_the_pull_and_the_upload_sidecar() {
        let def = NewDefinition::new("a", "busybox:1").into_definition();
        let mut r = run(&def);
        r.input_url = Some("s3://bucket/prefix/runs/x/input.zip".into());
        r.skip_failed_output = true;
        let j = job(&r, &def, &artifact_settings(), "batch", None).expect("job");
        let v = serde_json::to_value(&j).expect("json");
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 300);
        assert_eq!(pod["volumes"][0]["name"], INPUT_VOLUME);
        assert_eq!(pod["volumes"][1]["emptyDir"], serde_json::json!({}));
        assert_eq!(pod["initContainers"][0]["name"], PULL_CONTAINER);
        assert_eq!(
            pod["initContainers"][0]["args"],
            serde_json::json!([
                "artifacts",
                "pull",
                "s3://bucket/prefix/runs/x/input.zip",
                "/input"
            ])
        );
        let upload = &pod["initContainers"][1];
        assert_eq!(upload["name"], UPLOAD_CONTAINER);
        assert_eq!(upload["restartPolicy"], "Always");
        let url = format!("s3://bucket/prefix/runs/{}/attempt-2/output.zip", r.run_id);
        assert_eq!(upload["args"][3], url.as_str());
        let annotations = &v["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations[ANNOTATION_OUTPUT_URL], url.as_str());
        assert_eq!(annotations[ANNOTATION_SKIP_FAILED_OUTPUT], "true");
        let c = &pod["containers"][0];
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(c["volumeMounts"][1]["mountPath"], "/output");
        let names: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.contains(&ENV_INPUT_DIR) && names.contains(&ENV_OUTPUT_DIR));
        // No input: no pull, still the upload step.
        r.input_url = None;
        let j = job(&r, &def, &artifact_settings(), "batch", None).expect("job");
        let inits = j
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.init_containers)
            .expect("inits");
        assert_eq!(inits.len(), 1);
        assert_eq!(inits[0].name, UPLOAD_CONTAINER);
    }
}
