//! `S3Logs`: a run's output from the archive the cluster's log shipper
//! writes under `s3://<bucket>/<prefix>/<run_id>/...`, and
//! `PodThenS3Logs`, which reads the pod while it exists and S3 after.
//!
//! Objects of a run are read in key order with ranged GETs (a page never
//! downloads a whole object). Lines may be Docker JSON
//! (`{"log":"text\n","stream":"stdout","time":"..."}`), containerd/CRI text
//! (`<time> stdout F text`, `P` for a partial line) or plain text; only the
//! message text is returned. The cursor is the object key, the byte offset
//! of the line in it and the bytes of that line's message already read; as
//! a client sends it back, its key must be one of the run's own objects
//! and an offset inside a character snaps back to that character's start.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use chrono::DateTime;
use flotilla::{Error, ErrorKind, LogChunk, LogSource, Result, Run, RunStatus};

use crate::podlogs::{PodLogPosition, PodLogs};
use crate::settings::S3LogSettings;

const PREFIX: &str = "s1.";
/// Smallest range fetched per GET.
const MIN_RANGE: u64 = 4096;
/// Largest range fetched per GET; longer lines are fetched in several.
const MAX_RANGE: u64 = 4 << 20;

/// A position in a run's S3 archive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3LogPosition {
    /// Object key.
    pub key: String,
    /// Byte offset of the current line in the object.
    pub line_start: u64,
    /// Bytes of that line's message already read.
    pub msg_off: usize,
}

impl S3LogPosition {
    /// `s1.<line_start>.<msg_off>.<key>`.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}.{}", self.line_start, self.msg_off, self.key)
    }

    /// Parses a cursor made by [`S3LogPosition::encode`].
    pub fn decode(cursor: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("last_seen: '{cursor}' is not an S3 log cursor"));
        let rest = cursor.strip_prefix(PREFIX).ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '.');
        let line_start = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let msg_off = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let key = parts.next().filter(|k| !k.is_empty()).ok_or_else(bad)?;
        Ok(S3LogPosition {
            key: key.to_string(),
            line_start,
            msg_off,
        })
    }
}

/// The message of one archived line and its timestamp (Unix ns), if the
/// format has one.
pub fn parse_line(raw: &str) -> (String, Option<i64>) {
    let stamp = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
    };
    let trimmed = raw.trim_end_matches(['\n', '\r']);
    if trimmed.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed)
        && let Some(log) = v.get("log").and_then(|l| l.as_str())
    {
        let t = v.get("time").and_then(|t| t.as_str()).and_then(stamp);
        return (log.to_string(), t);
    }
    let mut parts = trimmed.splitn(4, ' ');
    if let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        && matches!(stream, "stdout" | "stderr")
        && matches!(tag, "F" | "P")
        && let Some(t) = stamp(ts)
    {
        let msg = parts.next().unwrap_or_default();
        let msg = if tag == "F" {
            format!("{msg}\n")
        } else {
            msg.to_string()
        };
        return (msg, Some(t));
    }
    (raw.to_string(), None)
}

/// The rest of `msg` after `skip` bytes read: an offset (the client's)
/// past the end or inside a character snaps back to a character boundary,
/// never a slice inside one. Returns the snapped offset too.
pub fn message_from(msg: &str, skip: usize) -> (usize, &str) {
    let at = msg.floor_char_boundary(skip.min(msg.len()));
    (at, &msg[at..])
}

/// One archived line.
#[derive(Debug, Clone)]
pub(crate) struct RawLine {
    start: u64,
    end: u64,
    msg: String,
    t: Option<i64>,
}

/// Reads logs archived in S3.
#[derive(Debug, Clone)]
pub struct S3Logs {
    client: Client,
    bucket: String,
    prefix: String,
    complete_after: Duration,
}

impl S3Logs {
    /// A source from settings: region and endpoint as given (path-style
    /// addressing with an endpoint), credentials from the default chain,
    /// rustls with ring.
    pub async fn new(settings: &S3LogSettings) -> Result<Self> {
        let shared = flotilla_aws::sdk_config(
            settings.region.as_deref().unwrap_or_default(),
            settings.endpoint_url.as_deref(),
            None,
            3,
        )
        .await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if settings.endpoint_url.is_some() {
            conf = conf.force_path_style(true);
        }
        Self::from_client(Client::from_conf(conf.build()), settings)
    }

    /// A source over a ready client.
    pub fn from_client(client: Client, settings: &S3LogSettings) -> Result<Self> {
        if settings.bucket.is_empty() {
            return Err(Error::invalid("s3.bucket: required"));
        }
        Ok(S3Logs {
            client,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.trim_matches('/').to_string(),
            complete_after: Duration::from_secs(settings.complete_after_seconds),
        })
    }

    /// `<prefix>/<run_id>/`.
    pub fn run_prefix(&self, run_id: &str) -> String {
        if self.prefix.is_empty() {
            format!("{run_id}/")
        } else {
            format!("{}/{run_id}/", self.prefix)
        }
    }

    /// The position a client's `cursor` names in `run`'s archive. The
    /// cursor is the client's, so its key is checked, never trusted: it
    /// must lie under the run's own prefix ([`S3Logs::run_prefix`]) with no
    /// empty, `.` or `..` segment, otherwise the cursor is `InvalidInput`
    /// naming `last_seen` (a cursor of another run never reads that run's
    /// archive).
    pub fn position_for(&self, run: &Run, cursor: &str) -> Result<S3LogPosition> {
        let p = S3LogPosition::decode(cursor)?;
        let own = self.run_prefix(&run.run_id);
        let confined = p.key.strip_prefix(&own).is_some_and(|rest| {
            !rest.is_empty() && rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
        });
        if !confined {
            return Err(Error::invalid(format!(
                "last_seen: '{cursor}' is not a cursor of run {}'s archived log",
                run.run_id
            )));
        }
        Ok(p)
    }

    /// Keys of the run's objects after `after` (all when `None`), in order.
    async fn keys_after(&self, run: &Run, after: Option<&str>) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.run_prefix(&run.run_id));
            if let Some(a) = after {
                req = req.start_after(a);
            }
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let out = req
                .send()
                .await
                .map_err(|e| flotilla_aws::map_sdk_error("listing archived logs", e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// Bytes `[start, start+len)` of `key` and the object's size; `None`
    /// past the end.
    async fn range(&self, key: &str, start: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!(
                "bytes={start}-{}",
                start.saturating_add(len.max(1) - 1)
            ))
            .send()
            .await;
        let out = match res {
            Ok(o) => o,
            Err(e) => {
                let status = match &e {
                    SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
                    _ => None,
                };
                if status == Some(416) || e.code() == Some("InvalidRange") {
                    return Ok(None);
                }
                return Err(flotilla_aws::map_sdk_error(
                    &format!("reading archived log {key}"),
                    e,
                ));
            }
        };
        let total = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::unavailable(format!("reading archived log {key}: {e}")))?
            .into_bytes()
            .to_vec();
        let total = total.unwrap_or(start.saturating_add(body.len() as u64));
        Ok(Some((body, total)))
    }

    /// Lines of `key` from byte `start` whose messages add up to at least
    /// `want` bytes (or to the end of the object); `true` when the object's
    /// end was reached.
    async fn lines_from(&self, key: &str, start: u64, want: usize) -> Result<(Vec<RawLine>, bool)> {
        let mut len = (want as u64)
            .saturating_mul(2)
            .saturating_add(512)
            .clamp(MIN_RANGE, MAX_RANGE);
        let mut out = Vec::new();
        let mut at = start;
        let mut got = 0usize;
        loop {
            let Some((bytes, total)) = self.range(key, at, len).await? else {
                return Ok((out, true));
            };
            let end = at.saturating_add(bytes.len() as u64);
            let eof = end >= total;
            let mut pos = 0usize;
            let mut progressed = false;
            while pos < bytes.len() {
                let line_end = match bytes[pos..].iter().position(|b| *b == b'\n') {
                    Some(i) => pos + i + 1,
                    None if eof => bytes.len(),
                    None => break,
                };
                let raw = String::from_utf8_lossy(&bytes[pos..line_end]);
                let (msg, t) = parse_line(&raw);
                got += msg.len();
                out.push(RawLine {
                    start: at + pos as u64,
                    end: at + line_end as u64,
                    msg,
                    t,
                });
                progressed = true;
                pos = line_end;
                if got >= want {
                    return Ok((out, eof && pos == bytes.len()));
                }
            }
            if eof {
                return Ok((out, true));
            }
            if progressed {
                at += pos as u64;
            } else if len >= MAX_RANGE {
                // A line longer than the largest range: take it in pieces.
                let (msg, t) = parse_line(&String::from_utf8_lossy(&bytes));
                out.push(RawLine {
                    start: at,
                    end,
                    msg,
                    t,
                });
                return Ok((out, false));
            } else {
                // A line longer than the range: fetch more of it at once.
                len = (len * 2).min(MAX_RANGE);
            }
        }
    }

    /// Reads after `pos` (from the start when `None`); pages of at most
    /// about `max` bytes; also returns whether everything archived so far
    /// was read.
    async fn read_pos(
        &self,
        run: &Run,
        pos: Option<S3LogPosition>,
        max: usize,
    ) -> Result<(String, Option<S3LogPosition>, bool)> {
        let max = max.max(1);
        let mut out = String::new();
        let (mut key, mut start, mut skip) = match pos {
            Some(p) => (p.key, p.line_start, p.msg_off),
            None => match self.keys_after(run, None).await?.into_iter().next() {
                Some(k) => (k, 0, 0),
                None => return Ok((out, None, true)),
            },
        };
        let at = |key: &str, line_start: u64, msg_off: usize| {
            Some(S3LogPosition {
                key: key.to_string(),
                line_start,
                msg_off,
            })
        };
        loop {
            let want = (max - out.len()).saturating_add(skip);
            let (lines, eof) = self.lines_from(&key, start, want).await?;
            for line in &lines {
                let (skip_at, msg) = message_from(&line.msg, skip);
                let budget = max - out.len();
                if msg.len() <= budget {
                    out.push_str(msg);
                    start = line.end;
                    skip = 0;
                    continue;
                }
                // Part of the message: the longest prefix on a character
                // boundary, at least one character when nothing was taken.
                let mut cut = budget;
                while cut > 0 && !msg.is_char_boundary(cut) {
                    cut -= 1;
                }
                if cut == 0 && out.is_empty() {
                    cut = msg.chars().next().map_or(0, char::len_utf8);
                }
                out.push_str(&msg[..cut]);
                let off = skip_at + cut;
                return Ok((out, at(&key, line.start, off), false));
            }
            if out.len() >= max {
                return Ok((out, at(&key, start, 0), false));
            }
            if !eof && !lines.is_empty() {
                continue;
            }
            // End of this object: the next one, if any.
            match self.keys_after(run, Some(&key)).await?.into_iter().next() {
                Some(next) => {
                    key = next;
                    start = 0;
                    skip = 0;
                }
                None => return Ok((out, at(&key, start, skip), true)),
            }
        }
    }

    /// Whether the run's archive is final: it stopped long enough ago for
    /// the shipper to have uploaded everything.
    fn settled(&self, run: &Run) -> bool {
        run.status == RunStatus::Stopped
            && run.finished_at.is_none_or(|f| {
                (flotilla::model::now() - f)
                    .to_std()
                    .is_ok_and(|d| d >= self.complete_after)
            })
    }
}

#[async_trait]
impl LogSource for S3Logs {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        let pos = cursor.map(|c| self.position_for(run, c)).transpose()?;
        let (log, next, all) = match self.read_pos(run, pos, max_bytes).await {
            // The cursor's key is under the run's prefix but no object.
            Err(e) if e.kind() == ErrorKind::NotFound && cursor.is_some() => {
                return Err(Error::invalid(format!(
                    "last_seen: '{}' names no object of run {}'s archived log ({})",
                    cursor.unwrap_or_default(),
                    run.run_id,
                    e.message()
                )));
            }
            r => r?,
        };
        Ok(LogChunk {
            log,
            cursor: next
                .map(|p| p.encode())
                .or_else(|| cursor.map(String::from)),
            complete: all && self.settled(run),
        })
    }
}

impl S3Logs {
    /// The archive position of a pod log position, found by the lines'
    /// timestamps (lines with the same timestamp counted in order, partial
    /// records joined to their line). `None` when the archive does not
    /// reach that far yet. A pod position inside a line the shipper split
    /// into partial records maps to that line's first record.
    pub async fn position_of(&self, run: &Run, p: PodLogPosition) -> Result<Option<S3LogPosition>> {
        let mut prev_t = None;
        let mut idx = 0u64;
        let mut continues = false;
        for key in self.keys_after(run, None).await? {
            let mut start = 0u64;
            loop {
                let (lines, eof) = self.lines_from(&key, start, 1 << 16).await?;
                for line in &lines {
                    let Some(t) = line.t else {
                        // No timestamps in this archive: it cannot be
                        // matched; read it from its start.
                        return Ok(Some(S3LogPosition {
                            key: key.clone(),
                            line_start: 0,
                            msg_off: 0,
                        }));
                    };
                    // A record after a partial one continues its line.
                    if continues {
                        continues = !line.msg.ends_with('\n');
                        start = line.end;
                        continue;
                    }
                    continues = !line.msg.ends_with('\n');
                    if prev_t == Some(t) {
                        idx += 1;
                    } else {
                        idx = 0;
                        prev_t = Some(t);
                    }
                    if (t, idx) >= (p.t, p.i) {
                        let off = if (t, idx) == (p.t, p.i) { p.off } else { 0 };
                        return Ok(Some(S3LogPosition {
                            key: key.clone(),
                            line_start: line.start,
                            msg_off: off,
                        }));
                    }
                    start = line.end;
                }
                if eof || lines.is_empty() {
                    break;
                }
            }
        }
        Ok(None)
    }
}

/// Reads the pod's log while the pod exists and the S3 archive after. Its
/// cursors are those of [`PodLogs`] and [`S3Logs`]; a pod cursor is carried
/// over to the archive by the lines' timestamps, so the switch neither
/// repeats nor skips text.
#[derive(Debug, Clone)]
pub struct PodThenS3Logs {
    pods: PodLogs,
    s3: S3Logs,
}

impl PodThenS3Logs {
    /// The composite of `pods` and `s3`.
    pub fn new(pods: PodLogs, s3: S3Logs) -> Self {
        PodThenS3Logs { pods, s3 }
    }
}

#[async_trait]
impl LogSource for PodThenS3Logs {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        if let Some(c) = cursor
            && c.starts_with(PREFIX)
        {
            return self.s3.read(run, cursor, max_bytes).await;
        }
        let pod_pos = cursor.map(PodLogPosition::decode).transpose()?;
        if let Some(chunk) = self.pods.read_pod(run, cursor, max_bytes).await? {
            return Ok(chunk);
        }
        match pod_pos {
            None => self.s3.read(run, None, max_bytes).await,
            Some(p) => match self.s3.position_of(run, p).await? {
                Some(pos) => {
                    let c = pos.encode();
                    self.s3.read(run, Some(&c), max_bytes).await
                }
                None => Ok(LogChunk {
                    log: String::new(),
                    cursor: cursor.map(String::from),
                    complete: self.s3.settled(run),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_understood() {
        let (m, t) = parse_line(
            "{\"log\":\"hi there\\n\",\"stream\":\"stdout\",\"time\":\"2026-01-01T00:00:00.5Z\"}\n",
        );
        assert_eq!(m, "hi there\n");
        assert!(t.is_some());
        let (m, t) = parse_line("2026-01-01T00:00:00.123456789Z stdout F hello world\n");
        assert_eq!(m, "hello world\n");
        assert!(t.is_some());
        let (m, _) = parse_line("2026-01-01T00:00:00Z stderr P part");
        assert_eq!(m, "part");
        let (m, t) = parse_line("plain text\n");
        assert_eq!(m, "plain text\n");
        assert!(t.is_none());
    }

    fn offline() -> S3Logs {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let settings = S3LogSettings {
            bucket: "archive".into(),
            prefix: "logs/eks".into(),
            ..S3LogSettings::default()
        };
        S3Logs::from_client(Client::from_conf(conf), &settings).expect("source")
    }

    fn run(id: &str) -> Run {
        let def = flotilla::NewDefinition::new("a", "busybox:1").into_definition();
        let mut r = Run::queued(&def, "east", "eks", "alice");
        r.run_id = id.into();
        r
    }

    #[test]
    fn a_cursor_naming_another_runs_key_is_refused() {
        let logs = offline();
        let mine = run("run-a");
        let own = S3LogPosition {
            key: "logs/eks/run-a/0001.log".into(),
            line_start: 0,
            msg_off: 0,
        };
        assert_eq!(logs.position_for(&mine, &own.encode()).expect("own"), own);
        for key in [
            "logs/eks/run-b/0001.log",
            "logs/eks/run-a",
            "logs/eks/run-a/",
            "logs/eks/run-ab/0001.log",
            "logs/eks/run-a/../run-b/0001.log",
            "logs/eks/run-a//0001.log",
            "other/run-a/0001.log",
            "/logs/eks/run-a/0001.log",
        ] {
            let forged = S3LogPosition {
                key: key.into(),
                line_start: 0,
                msg_off: 0,
            }
            .encode();
            let e = logs.position_for(&mine, &forged).expect_err(key);
            flotilla::testkit::logs::assert_bad_cursor(&forged, &e);
        }
    }

    #[test]
    fn an_offset_inside_a_character_snaps_back() {
        let msg = "a🦀b\n";
        for skip in 0..=msg.len() + 3 {
            let (at, rest) = message_from(msg, skip);
            assert!(msg.is_char_boundary(at) && at <= skip, "{skip} -> {at}");
            assert_eq!(rest, &msg[at..]);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_is_confined_to_the_run_or_refused(cursor in proptest::prelude::any::<String>()) {
            let logs = offline();
            let mine = run("run-a");
            let own = logs.run_prefix(&mine.run_id);
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                logs.position_for(&mine, &cursor),
                |p| p.key.starts_with(&own),
            );
        }

        #[test]
        fn cursors_like_valid_ones_are_confined_or_refused(
            cursor in "s1\\.[0-9+-]{0,21}\\.[0-9+-]{0,21}\\.(logs/eks/run-a?b?/?|\\.\\./)*[a-z0-9./🦀]{0,12}",
        ) {
            let logs = offline();
            let mine = run("run-a");
            let own = logs.run_prefix(&mine.run_id);
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                logs.position_for(&mine, &cursor),
                |p| p.key.starts_with(&own) && !p.key.contains("/../"),
            );
        }

        #[test]
        fn any_offset_reads_from_a_character_boundary(msg in "\\PC{0,16}", skip in proptest::prelude::any::<usize>()) {
            let (at, rest) = message_from(&msg, skip);
            proptest::prop_assert!(msg.is_char_boundary(at));
            proptest::prop_assert!(msg.ends_with(rest));
        }
    }

    #[test]
    fn cursors_round_trip() {
        let p = S3LogPosition {
            key: "logs/run.1/a.b.log".into(),
            line_start: 12,
            msg_off: 3,
        };
        assert_eq!(S3LogPosition::decode(&p.encode()).expect("decode"), p);
        for bad in ["garbage", "s1.x.1.k", "s1.1.2.", "🦀🦀", "-1", "::::"] {
            assert!(S3LogPosition::decode(bad).is_err(), "{bad}");
        }
    }
}
