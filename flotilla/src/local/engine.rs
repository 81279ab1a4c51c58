//! SCAFFOLD — replaced by the real LocalEngine.
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::{Capabilities, Engine, StatusUpdate, Submitted};
use crate::error::{Error, Result};
use crate::model::{Definition, Run};

/// Local engine settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where run directories go.
    pub data_dir: PathBuf,
    /// SIGTERM → SIGKILL grace.
    pub terminate_grace: Duration,
}

/// Runs commands as local processes.
#[derive(Debug)]
pub struct LocalEngine {
    config: LocalConfig,
}

impl LocalEngine {
    /// An engine keeping run directories under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Result<Self> {
        Ok(LocalEngine {
            config: LocalConfig {
                data_dir,
                terminate_grace: Duration::from_secs(10),
            },
        })
    }

    /// Settings.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }
}

#[async_trait]
impl Engine for LocalEngine {
    fn name(&self) -> &str {
        "local"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn submit(&self, _run: &Run, _def: &Definition) -> Result<Submitted> {
        Err(Error::unsupported("scaffold"))
    }
    async fn poll(&self, _runs: &[Run]) -> Result<Vec<StatusUpdate>> {
        Err(Error::unsupported("scaffold"))
    }
    async fn terminate(&self, _run: &Run, _reason: &str) -> Result<()> {
        Err(Error::unsupported("scaffold"))
    }
}
