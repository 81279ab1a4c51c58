//! The artifacts of one attempt on an engine that runs on this host (local
//! processes, Docker bind mounts): `input/` and `output/` in the attempt's
//! directory, and the upload of `output/` once the attempt ended.

use std::path::{Path, PathBuf};

use super::Artifacts;
use crate::error::{Error, Result};
use crate::model::{self, FailureCategory};

/// The attempt directory's input subdirectory.
pub const INPUT_DIR: &str = "input";
/// The attempt directory's output subdirectory.
pub const OUTPUT_DIR: &str = "output";

/// `data_dir` made absolute from the current directory, once, by an engine
/// on this host: a job runs in its own attempt directory and Docker bind
/// mounts need absolute host paths, so the paths a job is given
/// (`FLOTILLA_INPUT_DIR`, `FLOTILLA_OUTPUT_DIR`, mounts) must be absolute.
pub fn absolute_data_dir(data_dir: &Path) -> Result<PathBuf> {
    std::path::absolute(data_dir).map_err(|e| {
        Error::invalid(format!(
            "data_dir: {} has no absolute form: {e}",
            data_dir.display()
        ))
        .with_source(e)
    })
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display())).with_source(e)
}

impl Artifacts {
    /// Fetches and unpacks `input_url` into a fresh directory inside
    /// `attempt_dir` (see [`Artifacts::place_io_dirs`]); `None` without an
    /// input. A bad zip is `InvalidInput`, an unreachable store
    /// `Unavailable`; nothing is left behind on failure.
    pub async fn stage_input_dir(
        &self,
        attempt_dir: &Path,
        input_url: Option<&str>,
    ) -> Result<Option<PathBuf>> {
        let Some(url) = input_url else {
            return Ok(None);
        };
        let staging = attempt_dir.join(format!(".input-{}", model::new_id()));
        match self.fetch_input(url, &staging).await {
            Ok(_) => Ok(Some(staging)),
            Err(e) => {
                discard_staged(Some(&staging));
                Err(e)
            }
        }
    }

    /// Makes `attempt_dir/input` (the staged input renamed into place, or
    /// empty) and `attempt_dir/output`.
    pub fn place_io_dirs(attempt_dir: &Path, staged: Option<&Path>) -> Result<()> {
        let input = attempt_dir.join(INPUT_DIR);
        if input.exists() {
            std::fs::remove_dir_all(&input).map_err(|e| io("removing", &input, e))?;
        }
        match staged {
            Some(s) => std::fs::rename(s, &input).map_err(|e| io("placing", &input, e))?,
            None => std::fs::create_dir_all(&input).map_err(|e| io("creating", &input, e))?,
        }
        let output = attempt_dir.join(OUTPUT_DIR);
        std::fs::create_dir_all(&output).map_err(|e| io("creating", &output, e))
    }

    /// Uploads what the attempt left in `attempt_dir/output` and records
    /// the result on its outcome: `output_url` on success; on failure a
    /// successful attempt becomes `artifact_upload` and a failed one keeps
    /// its failure with the upload's error added to its reason. Nothing is
    /// uploaded from an empty or missing `output/`, nor from a failed
    /// attempt when `skip_failed`. Returns the output URL.
    pub async fn upload_attempt(
        &self,
        attempt_dir: &Path,
        (run_id, attempt): (&str, u32),
        skip_failed: bool,
        failure: &mut Option<FailureCategory>,
        reason: &mut Option<String>,
        exit_code: Option<i64>,
    ) -> Option<String> {
        let failed = failure.is_some() || exit_code != Some(0);
        if failed && skip_failed {
            return None;
        }
        let out = attempt_dir.join(OUTPUT_DIR);
        if std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()) {
            return None;
        }
        match self.upload_output(&out, run_id, attempt).await {
            Ok(url) => Some(url),
            Err(e) => {
                tracing::warn!(run_id, attempt, error = %e, "uploading the output failed");
                let why = format!("uploading the output failed: {e}");
                if failed {
                    *reason = Some(match reason.take() {
                        Some(r) => format!("{r}; {why}"),
                        None => why,
                    });
                } else {
                    *failure = Some(FailureCategory::ArtifactUpload);
                    *reason = Some(why);
                }
                None
            }
        }
    }
}

/// Removes a staged input that will not be used.
pub fn discard_staged(staged: Option<&Path>) {
    if let Some(p) = staged {
        let _ = std::fs::remove_dir_all(p);
    }
}
