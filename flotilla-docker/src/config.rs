//! [`DockerConfig`]: how the engine reaches the daemon and runs containers.

use std::path::PathBuf;
use std::time::Duration;

/// The Docker engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DockerConfig {
    /// The daemon: `unix:///path/to/docker.sock` (default
    /// `unix:///var/run/docker.sock`). Only unix sockets are supported.
    pub host: String,
    /// The containers' network mode (`none`, `bridge`, `host`, a network
    /// name). Default `none`: no network at all, which works on a daemon
    /// started with `--bridge=none`; set `bridge` for jobs that need one.
    pub network_mode: String,
    /// Where the engine keeps what must outlive a container: archived logs,
    /// recorded outcomes, stop requests (`<data_dir>/runs/<run_id>/attempt-<n>/`).
    pub data_dir: PathBuf,
    /// The engine's name (`Run::engine`), default `docker`.
    pub name: String,
    /// Prefix of container names (`<prefix>-<run_id>-a<attempt>`) and value
    /// of the [`MANAGED_LABEL`](crate::MANAGED_LABEL), default `flotilla`.
    /// Two servers sharing one daemon use distinct prefixes.
    pub name_prefix: String,
    /// How long terminate waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Remove a container once flotilla stored its outcome
    /// ([`flotilla::Engine::finished`]), after archiving its log. Default
    /// true; false keeps containers for inspection.
    pub remove_finished: bool,
    /// Timeout of one Docker API call, in seconds.
    pub api_timeout_secs: u64,
    /// The daemon can give containers GPUs (a GPU runtime such as the
    /// NVIDIA container toolkit is installed): runs with `gpu` get that
    /// many through a device request. Default false: the engine says it
    /// has no GPUs and such runs are refused at execute.
    pub gpus: bool,
    /// The device-request driver for GPUs (`""`: the daemon's default,
    /// `nvidia`, ...).
    pub gpu_driver: String,
    /// The Docker client configuration holding registry credentials
    /// (`auths`, `credHelpers`, `credsStore`), used for image pulls.
    /// Default `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`; a missing file means anonymous pulls.
    pub registry_config: Option<PathBuf>,
    /// Artifact stores: each attempt gets `input/` and `output/` in its
    /// directory, bind-mounted at `/input` (read only) and `/output`
    /// (`FLOTILLA_INPUT_DIR`, `FLOTILLA_OUTPUT_DIR`); the run's input zip is
    /// unpacked before the container is created and what it leaves in
    /// `/output` is uploaded before its end is reported. Default none.
    pub artifacts: Option<flotilla::artifacts::Artifacts>,
}

impl DockerConfig {
    /// Defaults, with the data dir `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".to_string(),
            network_mode: "none".to_string(),
            data_dir: data_dir.into(),
            name: "docker".to_string(),
            name_prefix: "flotilla".to_string(),
            stop_grace: Duration::from_secs(10),
            remove_finished: true,
            api_timeout_secs: 120,
            gpus: false,
            gpu_driver: String::new(),
            registry_config: crate::credentials::default_config_file(),
            artifacts: None,
        }
    }

    /// Sets whether the daemon has GPUs, and their device-request driver.
    pub fn gpus(mut self, gpus: bool, driver: impl Into<String>) -> Self {
        self.gpus = gpus;
        self.gpu_driver = driver.into();
        self
    }

    /// Sets the Docker client configuration file holding registry
    /// credentials (`None`: anonymous pulls only).
    pub fn registry_config(mut self, file: Option<PathBuf>) -> Self {
        self.registry_config = file;
        self
    }

    /// Sets the artifact stores (see [`DockerConfig::artifacts`]).
    pub fn artifacts(mut self, artifacts: flotilla::artifacts::Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// Sets the daemon address.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets the network mode.
    pub fn network_mode(mut self, mode: impl Into<String>) -> Self {
        self.network_mode = mode.into();
        self
    }

    /// Sets the container name prefix.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Sets the terminate grace.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Sets whether finished containers are removed.
    pub fn remove_finished(mut self, remove: bool) -> Self {
        self.remove_finished = remove;
        self
    }
}
