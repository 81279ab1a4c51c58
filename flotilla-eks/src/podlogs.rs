//! `PodLogs`: a run's output read from its pod through the API server.
//!
//! The pod log is fetched with `timestamps=true` and `sinceTime` (whole
//! seconds, rounded down) from the cursor's line. The cursor names a
//! position exactly: the kubelet's timestamp of a line, how many lines with
//! that same timestamp came before it, and a byte offset inside it. Reading
//! from a returned cursor therefore never repeats or skips text, even when
//! many lines share a timestamp or a page ends inside a line. A cursor is
//! the client's: it names a position only (the pod is always the run's), and
//! an offset past its line or inside a character snaps back to a character
//! boundary, never a slice inside one.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use flotilla::{Error, LogChunk, LogSource, Result, Run, RunStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};

use crate::engine::{ClusterHandle, EksEngine, Inner};
use crate::error::{api_code, from_kube};
use crate::names::{self, JOB_NAME_LABEL};

const PREFIX: &str = "p1.";

/// A position in a pod log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodLogPosition {
    /// Timestamp (Unix nanoseconds) of the line the position is in.
    pub t: i64,
    /// Lines with timestamp `t` before that line.
    pub i: u64,
    /// Bytes of that line already read.
    pub off: usize,
}

impl PodLogPosition {
    /// `p1.<t>.<i>.<off>`.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}.{}.{}", self.t, self.i, self.off)
    }

    /// Parses a cursor made by [`PodLogPosition::encode`].
    pub fn decode(cursor: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("last_seen: '{cursor}' is not a pod log cursor"));
        let rest = cursor.strip_prefix(PREFIX).ok_or_else(bad)?;
        let mut parts = rest.split('.');
        let t = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let i = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let off = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(PodLogPosition { t, i, off })
    }
}

/// One log line: kubelet timestamp (Unix ns) and text (with its `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    /// Unix nanoseconds.
    pub t: i64,
    /// Text, `\n` included when the line is complete.
    pub text: String,
}

/// Splits `timestamps=true` output into lines. A last line without `\n`
/// is kept only when `final_text` (the container ended); otherwise it is
/// still being written and is left for the next read.
pub fn parse_timed(body: &str, final_text: bool) -> Vec<TimedLine> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (line, complete) = match rest.find('\n') {
            Some(i) => (&rest[..=i], true),
            None => (rest, false),
        };
        rest = &rest[line.len()..];
        if !complete && !final_text {
            break;
        }
        let (stamp, text) = line
            .split_once(' ')
            .unwrap_or((line.trim_end_matches('\n'), "\n"));
        let Some(t) = DateTime::parse_from_rfc3339(stamp)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
        else {
            // Not a timestamped line (should not happen): keep it whole,
            // stamped like the previous line.
            let t = out.last().map_or(0, |l: &TimedLine| l.t);
            out.push(TimedLine {
                t,
                text: line.to_string(),
            });
            continue;
        };
        out.push(TimedLine {
            t,
            text: text.to_string(),
        });
    }
    out
}

/// Takes at most about `max` bytes of `lines` after `from`; returns the
/// text, the position after it, and whether every line was consumed.
pub fn page(
    lines: &[TimedLine],
    from: Option<PodLogPosition>,
    max: usize,
) -> (String, Option<PodLogPosition>, bool) {
    let mut out = String::new();
    let mut pos = from;
    let mut prev_t = None;
    let mut idx = 0u64;
    for line in lines {
        if prev_t == Some(line.t) {
            idx += 1;
        } else {
            idx = 0;
            prev_t = Some(line.t);
        }
        let skip = match from {
            Some(p) if (line.t, idx) < (p.t, p.i) => continue,
            // The cursor is the client's: an offset past the line or
            // inside a character is snapped back to a character boundary.
            Some(p) if (line.t, idx) == (p.t, p.i) => {
                line.text.floor_char_boundary(p.off.min(line.text.len()))
            }
            _ => 0,
        };
        let rest = &line.text[skip..];
        let budget = max.saturating_sub(out.len());
        if rest.len() <= budget {
            out.push_str(rest);
            pos = Some(PodLogPosition {
                t: line.t,
                i: idx + 1,
                off: 0,
            });
            continue;
        }
        // Part of the line: the longest prefix on a character boundary,
        // at least one character when nothing was taken yet.
        let mut cut = budget;
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 && out.is_empty() {
            cut = rest.chars().next().map_or(0, char::len_utf8);
        }
        out.push_str(&rest[..cut]);
        if cut > 0 || skip > 0 {
            pos = Some(PodLogPosition {
                t: line.t,
                i: idx,
                off: skip + cut,
            });
        }
        return (out, pos, false);
    }
    (out, pos, true)
}

/// Reads a run's log from its pod through the Kubernetes API.
#[derive(Clone)]
pub struct PodLogs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PodLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodLogs").finish_non_exhaustive()
    }
}

/// The pod of a run, from the engine's cache or by one list call.
pub(crate) async fn find_pod(handle: &ClusterHandle, job_name: &str) -> Result<Option<Pod>> {
    if let Some(pod) = handle.lock().pod_of(job_name) {
        return Ok(Some(pod));
    }
    let lp = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job_name}"));
    let list = handle
        .pods
        .list(&lp)
        .await
        .map_err(|e| from_kube(&format!("listing the pods of Job {job_name}"), e))?;
    Ok(crate::observe::newest(list.items.iter()).cloned())
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl PodLogs {
    /// A log source using `engine`'s clusters and pod cache.
    pub fn new(engine: &EksEngine) -> Self {
        PodLogs {
            inner: engine.inner.clone(),
        }
    }
}

fn job_name(run: &Run) -> String {
    run.engine_ref
        .clone()
        .unwrap_or_else(|| names::job_name(&run.run_id, run.attempt))
}

impl PodLogs {
    /// Reads from the run's pod; `None` when the pod does not exist (not
    /// created yet, or gone).
    pub async fn read_pod(
        &self,
        run: &Run,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> Result<Option<LogChunk>> {
        let from = cursor.map(PodLogPosition::decode).transpose()?;
        let keep = |log: String, complete: bool| LogChunk {
            log,
            cursor: cursor.map(String::from),
            complete,
        };
        if run.status == RunStatus::Queued {
            return Ok(Some(keep(String::new(), false)));
        }
        let stopped = run.status == RunStatus::Stopped;
        let handle = self.inner.cluster(run)?;
        let job = job_name(run);
        let Some(pod) = find_pod(handle, &job).await? else {
            return Ok(None);
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let done = finished(&pod);
        let since = match from {
            Some(p) => {
                let secs = p.t.div_euclid(1_000_000_000);
                Some(
                    k8s_openapi::jiff::Timestamp::from_second(secs)
                        .map_err(|e| Error::invalid(format!("last_seen: {e}")))?,
                )
            }
            None => None,
        };
        // Bounded fetches: enough for a page after the cursor's second;
        // grown when the lines of that second before the cursor fill it.
        let mut limit = (max_bytes.saturating_mul(4)).clamp(64 << 10, 8 << 20);
        loop {
            let lp = LogParams {
                container: Some(crate::spec::CONTAINER.to_string()),
                timestamps: true,
                since_time: since,
                limit_bytes: Some(limit as i64),
                ..Default::default()
            };
            let stream = match handle.pods.log_stream(&pod_name, &lp).await {
                Ok(b) => b,
                // Not started yet.
                Err(e) if api_code(&e) == Some(400) => {
                    return Ok(Some(keep(String::new(), false)));
                }
                // Gone since.
                Err(e) if api_code(&e) == Some(404) => return Ok(None),
                Err(e) => {
                    return Err(from_kube(&format!("reading the log of pod {pod_name}"), e));
                }
            };
            let mut bytes = Vec::new();
            futures::pin_mut!(stream);
            futures::AsyncReadExt::read_to_end(&mut stream, &mut bytes)
                .await
                .map_err(|e| {
                    Error::unavailable(format!("reading the log of pod {pod_name}: {e}"))
                })?;
            let truncated = bytes.len() >= limit;
            if truncated {
                // The API server cuts at a byte count: drop the cut line.
                let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                bytes.truncate(keep);
            }
            let body = String::from_utf8_lossy(&bytes);
            let lines = parse_timed(&body, done && !truncated);
            let (log, pos, all) = page(&lines, from, max_bytes.max(1));
            if log.is_empty() && truncated && limit < (1 << 30) {
                limit *= 4;
                continue;
            }
            return Ok(Some(LogChunk {
                log,
                cursor: pos.map(|p| p.encode()).or_else(|| cursor.map(String::from)),
                complete: stopped && done && all && !truncated,
            }));
        }
    }
}

#[async_trait]
impl LogSource for PodLogs {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        match self.read_pod(run, cursor, max_bytes).await? {
            Some(chunk) => Ok(chunk),
            // No pod: nothing yet, or nothing more once the run stopped.
            None => Ok(LogChunk {
                log: String::new(),
                cursor: cursor.map(String::from),
                complete: run.status == RunStatus::Stopped,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(spec: &[(i64, &str)]) -> Vec<TimedLine> {
        spec.iter()
            .map(|(t, s)| TimedLine {
                t: *t,
                text: format!("{s}\n"),
            })
            .collect()
    }

    #[test]
    fn same_timestamps_are_counted_not_repeated() {
        let l = lines(&[(5, "a"), (5, "b"), (5, "c"), (6, "d")]);
        let mut cursor = None;
        let mut got = String::new();
        for _ in 0..20 {
            let (text, pos, _) = page(&l, cursor, 3);
            got.push_str(&text);
            cursor = pos;
        }
        assert_eq!(got, "a\nb\nc\nd\n");
    }

    #[test]
    fn pages_split_lines_on_character_boundaries() {
        let l = lines(&[(1, "🦀🦀"), (2, "ß")]);
        let mut cursor = None;
        let mut pages = Vec::new();
        loop {
            let (text, pos, all) = page(&l, cursor, 5);
            pages.push(text);
            cursor = pos;
            if all {
                break;
            }
        }
        assert_eq!(pages.concat(), "🦀🦀\nß\n");
        assert!(pages.iter().all(|p| p.len() <= 5));
    }

    #[test]
    fn timed_lines_parse_and_partial_lines_wait() {
        let body = "2026-01-01T00:00:00.5Z hello\n2026-01-01T00:00:01Z wor";
        let l = parse_timed(body, false);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].text, "hello\n");
        assert_eq!(parse_timed(body, true).len(), 2);
    }

    #[test]
    fn an_offset_inside_a_character_snaps_back() {
        let l = lines(&[(1, "a🦀b"), (2, "日本")]);
        for off in 0..12 {
            let from = PodLogPosition { t: 1, i: 0, off };
            let (text, _, _) = page(&l, Some(from), 100);
            let line = "a🦀b\n";
            let at = line.floor_char_boundary(off.min(line.len()));
            assert_eq!(text, format!("{}日本\n", &line[at..]), "off {off}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_decodes_to_a_position_or_is_refused(cursor in proptest::prelude::any::<String>()) {
            // A position names no pod (the pod is the run's): any decoded
            // one is confined to the run.
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                PodLogPosition::decode(&cursor),
                |_| true,
            );
        }

        #[test]
        fn cursors_like_valid_ones_decode_or_are_refused(cursor in "p1\\.[0-9+-]{0,21}\\.[0-9+-]{0,21}\\.[0-9+-🦀.]{0,21}") {
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                PodLogPosition::decode(&cursor),
                |_| true,
            );
        }

        #[test]
        fn any_position_reads_the_runs_own_text_without_splitting(
            t in 0i64..4,
            i in 0u64..3,
            off in proptest::prelude::any::<usize>(),
            small in 0usize..24,
            max in 1usize..16,
        ) {
            let l = lines(&[(1, "aé🦀"), (1, "日本語"), (2, "ß🚀x"), (3, "")]);
            let all: String = l.iter().map(|x| x.text.as_str()).collect();
            // Small offsets land inside characters; any offset is survived.
            let off = if off % 2 == 0 { small } else { off };
            let (text, pos, _) = page(&l, Some(PodLogPosition { t, i, off }), max);
            proptest::prop_assert!(all.contains(&text), "{:?} is not the run's text", text);
            // The position returned reads on.
            let (next, _, _) = page(&l, pos, max);
            proptest::prop_assert!(all.contains(&next));
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let p = PodLogPosition {
            t: 17,
            i: 2,
            off: 3,
        };
        assert_eq!(PodLogPosition::decode(&p.encode()).expect("decode"), p);
        for bad in ["garbage", "p1.x.1.2", "p1.1.2", "p1.1.2.3.4", "🦀"] {
            let e = PodLogPosition::decode(bad).expect_err("garbage");
            assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput);
        }
    }
}
