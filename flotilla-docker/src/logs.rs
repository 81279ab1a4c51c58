//! [`DockerLogs`]: a container's standard output and error, from the Docker
//! API while the container exists and from the archive afterwards.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::LogsOptions;
use flotilla::{LogChunk, LogSource, Run, RunStatus};
use futures::StreamExt;

use crate::engine::{Shared, check_run_id};
use crate::error::{DResult, DockerError, DockerErrorKind};
use crate::store::LOG;

/// Cursor prefix: `dk1:<attempt>:<byte offset>:<run_id>`.
const CURSOR: &str = "dk1";

/// Reads run logs of a [`DockerEngine`](crate::DockerEngine).
///
/// - The text is the attempt's standard output and error as the daemon
///   stores them (interleaved in the order written), read through the
///   Docker API while the container exists and from
///   `<data_dir>/runs/<run_id>/attempt-<n>/output.log` (archived by
///   [`Engine::finished`](flotilla::Engine::finished) before the container
///   is removed) afterwards: the same bytes either way.
/// - The cursor is `dk1:<attempt>:<offset>:<run_id>`, a byte offset into
///   that text. It is checked, never trusted: another run's cursor, a later
///   attempt than the run's, an offset past the text or inside a character
///   is `InvalidInput`. A cursor of an earlier attempt of the same run reads
///   the current attempt from its start.
/// - Pages end on character boundaries; while the container runs, a
///   character still being written is held back.
#[derive(Debug, Clone)]
pub struct DockerLogs {
    shared: Arc<Shared>,
}

impl DockerLogs {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        DockerLogs { shared }
    }
}

fn bad_cursor(why: &str) -> DockerError {
    DockerError::new(DockerErrorKind::Invalid, format!("last_seen: {why}"))
}

/// Decodes a client's cursor for `run`: the byte offset to read from.
fn decode(run: &Run, cursor: &str) -> DResult<usize> {
    let mut parts = cursor.splitn(4, ':');
    let (Some(tag), Some(attempt), Some(offset), Some(run_id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_cursor("not a cursor of this log"));
    };
    if tag != CURSOR {
        return Err(bad_cursor("not a cursor of this log"));
    }
    if run_id != run.run_id {
        return Err(bad_cursor("a cursor of another run"));
    }
    let attempt: u32 = attempt
        .parse()
        .map_err(|_| bad_cursor("not a cursor of this log"))?;
    let offset: usize = offset
        .parse()
        .map_err(|_| bad_cursor("not a cursor of this log"))?;
    if attempt > run.attempt || attempt == 0 {
        return Err(bad_cursor("a cursor of an attempt the run has not made"));
    }
    if attempt < run.attempt {
        return Ok(0);
    }
    Ok(offset)
}

fn encode(run: &Run, offset: usize) -> String {
    format!("{CURSOR}:{}:{offset}:{}", run.attempt, run.run_id)
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The length of `bytes` without a trailing, still incomplete character.
fn complete_len(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=4.min(len) {
        let p = len - back;
        let b = bytes[p];
        if !is_continuation(b) {
            let width = match b {
                0x00..=0x7F => 1,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if p + width > len { p } else { len };
        }
    }
    len
}

/// The whole log (stdout and stderr) of a container.
pub(crate) async fn fetch_log(docker: &Docker, name: &str) -> DResult<Vec<u8>> {
    let opts = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        tail: "all".to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(name, Some(opts));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item.map_err(|e| DockerError::from_bollard("container logs", e))? {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => out.extend_from_slice(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(out)
}

impl DockerLogs {
    /// The attempt's text and whether more may still come.
    async fn text(&self, run: &Run) -> DResult<(Vec<u8>, bool)> {
        let s = &self.shared;
        let name = s.container_name(&run.run_id, run.attempt);
        if let Some(c) = s.inspect(&name).await? {
            let running = !matches!(
                c.state.as_ref().and_then(|st| st.status),
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            match fetch_log(&s.docker, &name).await {
                Ok(bytes) => return Ok((bytes, running)),
                Err(e) if e.kind() == DockerErrorKind::NotFound => {
                    // Removed meanwhile: the archive has it.
                }
                Err(e) => return Err(e),
            }
        }
        match s.files.read_bytes(&run.run_id, run.attempt, LOG).await? {
            Some(bytes) => Ok((bytes, false)),
            // Not created yet, or never will be: nothing written.
            None => Ok((Vec::new(), run.status != RunStatus::Stopped)),
        }
    }

    async fn read_page(&self, run: &Run, cursor: Option<&str>, max: usize) -> DResult<LogChunk> {
        check_run_id(&run.run_id).map_err(|_| bad_cursor("not a run of this engine"))?;
        let offset = match cursor {
            Some(c) => decode(run, c)?,
            None => 0,
        };
        let (bytes, live) = self.text(run).await?;
        if offset > bytes.len() {
            return Err(bad_cursor("past the end of the log"));
        }
        if offset < bytes.len() && is_continuation(bytes[offset]) {
            return Err(bad_cursor("inside a character"));
        }
        let avail = if live {
            complete_len(&bytes)
        } else {
            bytes.len()
        };
        let avail = avail.max(offset);
        let mut end = offset.saturating_add(max.max(1)).min(avail);
        while end > offset && end < avail && is_continuation(bytes[end]) {
            end -= 1;
        }
        if end == offset && offset < avail {
            // max_bytes below one character: give that one character.
            end = offset + 1;
            while end < avail && is_continuation(bytes[end]) {
                end += 1;
            }
        }
        let log = String::from_utf8_lossy(&bytes[offset..end]).into_owned();
        let complete = run.status == RunStatus::Stopped && !live && end == bytes.len();
        let cursor = if end > 0 || cursor.is_some() {
            Some(encode(run, end))
        } else {
            None
        };
        Ok(LogChunk {
            log,
            cursor,
            complete,
        })
    }
}

#[async_trait]
impl LogSource for DockerLogs {
    async fn read(
        &self,
        run: &Run,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> flotilla::Result<LogChunk> {
        Ok(self.read_page(run, cursor, max_bytes).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_tails_are_held_back() {
        let s = "a🦀".as_bytes();
        assert_eq!(complete_len(s), s.len());
        assert_eq!(complete_len(&s[..3]), 1);
        assert_eq!(complete_len(b""), 0);
    }
}
