//! Run artifacts in the service: staging an execute's input, reading an
//! output back.

use base64::Engine as _;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::Flotilla;

use crate::artifacts::Artifacts;
use crate::error::{Error, Result};
use crate::model::{ExecuteRequest, Run};

impl Flotilla {
    /// The artifact stores, when configured.
    pub fn artifacts(&self) -> Option<&Artifacts> {
        self.inner.artifacts.as_ref()
    }

    /// Puts the request's input on `run` (`input_url`): an inline
    /// `input_zip` is decoded, checked and stored; an `input_url` must lie
    /// inside a configured store. The run's engine must support artifacts.
    /// Returns what the timeline says about it.
    pub(crate) async fn stage_input(
        &self,
        run: &mut Run,
        request: &ExecuteRequest,
        engine_has_artifacts: bool,
    ) -> Result<Option<String>> {
        let field = match (&request.input_zip, &request.input_url) {
            (None, None) => return Ok(None),
            (Some(_), _) => "input_zip",
            (None, Some(_)) => "input_url",
        };
        let Some(artifacts) = self.artifacts() else {
            return Err(Error::invalid(format!(
                "{field}: this server has no artifact store configured"
            )));
        };
        if !engine_has_artifacts {
            return Err(Error::invalid(format!(
                "{field}: engine '{}' does not support input and output artifacts",
                run.engine
            )));
        }
        if let Some(b64) = &request.input_zip {
            let zip = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Error::invalid(format!("input_zip: not valid base64: {e}")))?;
            let size = zip.len();
            let url = artifacts.stage_input(&run.run_id, zip).await?;
            run.input_url = Some(url.clone());
            return Ok(Some(format!("input zip ({size} bytes) staged at {url}")));
        }
        if let Some(url) = &request.input_url {
            artifacts.check_url(url)?;
            run.input_url = Some(url.clone());
            return Ok(Some(format!("input from {url}")));
        }
        Ok(None)
    }

    /// The output zip of run `run_id`: its size and bytes. `NotFound` when
    /// the run has none (yet).
    pub async fn open_output(
        &self,
        run_id: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        let run = self.inner.store.get_run(run_id).await?;
        let (Some(url), Some(artifacts)) = (&run.output_url, self.artifacts()) else {
            return Err(Error::not_found(format!(
                "run {run_id} has no output (yet)"
            )));
        };
        artifacts.open(url).await
    }
}
