//! What the engine keeps in its data dir, per attempt
//! (`<data_dir>/runs/<run_id>/attempt-<n>/`): the recorded outcome
//! (`outcome.json`), a stop request (`stop.json`: terminated or timed out,
//! written before the container is signalled so a restarted engine still
//! classifies the end), and the archived log (`output.log`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flotilla::FailureCategory;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DResult, DockerError};

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub failure: Option<FailureCategory>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the attempt's output zip was uploaded.
    #[serde(default)]
    pub output_url: Option<String>,
}

/// Why flotilla stopped a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StopCause {
    /// `Engine::terminate`, with who asked.
    Terminated(String),
    /// `active_deadline_seconds` passed.
    Timeout(String),
}

/// The per-attempt files under one data dir.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    root: PathBuf,
}

pub(crate) const OUTCOME: &str = "outcome.json";
pub(crate) const STOP: &str = "stop.json";
pub(crate) const LOG: &str = "output.log";
/// The result of the attempt's output upload (written once it was tried).
pub(crate) const UPLOAD: &str = "upload.json";

/// What `upload.json` holds: the outcome's fields the upload set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    pub output_url: Option<String>,
    pub failure: Option<FailureCategory>,
    pub reason: Option<String>,
}

impl Files {
    pub fn new(root: PathBuf) -> Self {
        Files { root }
    }

    /// The attempt's directory (run ids are checked by the caller).
    pub fn dir(&self, run_id: &str, attempt: u32) -> PathBuf {
        self.root
            .join("runs")
            .join(run_id)
            .join(format!("attempt-{attempt}"))
    }

    pub fn path(&self, run_id: &str, attempt: u32, file: &str) -> PathBuf {
        self.dir(run_id, attempt).join(file)
    }

    /// Reads a file if it exists.
    pub async fn read_bytes(
        &self,
        run_id: &str,
        attempt: u32,
        file: &str,
    ) -> DResult<Option<Vec<u8>>> {
        let p = self.path(run_id, attempt, file);
        match tokio::fs::read(&p).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DockerError::storage(p.display(), e)),
        }
    }

    pub async fn read_json<T: DeserializeOwned>(
        &self,
        run_id: &str,
        attempt: u32,
        file: &str,
    ) -> DResult<Option<T>> {
        let Some(bytes) = self.read_bytes(run_id, attempt, file).await? else {
            return Ok(None);
        };
        let p = self.path(run_id, attempt, file);
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            DockerError::storage(
                p.display(),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Writes a file atomically (temp file, fsync, rename).
    pub async fn write_bytes(
        &self,
        run_id: &str,
        attempt: u32,
        file: &str,
        bytes: &[u8],
    ) -> DResult<()> {
        let dir = self.dir(run_id, attempt);
        write_atomic(&dir, file, bytes).await
    }

    pub async fn write_json<T: Serialize>(
        &self,
        run_id: &str,
        attempt: u32,
        file: &str,
        value: &T,
    ) -> DResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            DockerError::storage(
                file,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        self.write_bytes(run_id, attempt, file, &bytes).await
    }
}

async fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> DResult<()> {
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| DockerError::storage(dir.display(), e))?;
    let tmp = dir.join(format!(".{file}.{:x}.tmp", std::process::id()));
    let target = dir.join(file);
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| DockerError::storage(tmp.display(), e))?;
    f.write_all(bytes)
        .await
        .map_err(|e| DockerError::storage(tmp.display(), e))?;
    f.sync_all()
        .await
        .map_err(|e| DockerError::storage(tmp.display(), e))?;
    drop(f);
    tokio::fs::rename(&tmp, &target)
        .await
        .map_err(|e| DockerError::storage(target.display(), e))
}
