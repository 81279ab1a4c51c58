//! [`LocalLogSource`]: the output files the local engine writes, page by page.

use std::io::SeekFrom;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::LocalEngine;
use crate::error::{Error, Result};
use crate::logs::{LogChunk, LogSource};
use crate::model::{Run, RunStatus};

/// The most one read returns, whatever `max_bytes` asks.
const MAX_PAGE: usize = 16 << 20;

/// Reads the output the local engine captured (`output.log` of each
/// attempt).
///
/// - Only the run's **current attempt** is read, as on the other engines
///   (each attempt is a new container with its own log). The cursor is
///   `"<attempt>:<byte offset>"`; a cursor of an earlier attempt (the run
///   was retried since) continues at the start of the current attempt's
///   text, so nothing is repeated.
/// - Pages hold at most `max_bytes` (at least one character), ending on a
///   UTF-8 character boundary: a character the process has only partly
///   written yet is left for the next read. Bytes that are not UTF-8 are
///   shown as U+FFFD.
/// - No file yet (not started) reads as empty text with the cursor
///   unchanged; `complete` is true once the run is STOPPED and the cursor
///   is at the end of the file.
/// - The cursor is the client's, so it is validated, never trusted: one
///   not of this form, of a later attempt than the run's, or past the end
///   of the file is `InvalidInput` naming `last_seen`; an offset inside a
///   UTF-8 character reads from that character's first byte.
#[derive(Debug, Clone)]
pub struct LocalLogSource {
    engine: Arc<LocalEngine>,
}

impl LocalLogSource {
    /// A source for `engine`'s runs.
    pub fn new(engine: Arc<LocalEngine>) -> Self {
        LocalLogSource { engine }
    }
}

fn bad_cursor(cursor: &str, why: &str) -> Error {
    Error::invalid(format!(
        "last_seen: '{cursor}' is not a cursor of this run's local log ({why})"
    ))
}

/// Parses `"<attempt>:<offset>"`.
fn parse_cursor(cursor: &str) -> Result<(u32, u64)> {
    let (a, o) = cursor
        .split_once(':')
        .ok_or_else(|| bad_cursor(cursor, "expected <attempt>:<byte offset>"))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(a) || !digits(o) {
        return Err(bad_cursor(cursor, "expected <attempt>:<byte offset>"));
    }
    let attempt: u32 = a
        .parse()
        .map_err(|_| bad_cursor(cursor, "attempt out of range"))?;
    let offset: u64 = o
        .parse()
        .map_err(|_| bad_cursor(cursor, "offset out of range"))?;
    if attempt == 0 {
        return Err(bad_cursor(cursor, "attempts count from 1"));
    }
    Ok((attempt, offset))
}

/// The length of the UTF-8 sequence a lead byte starts (1 for anything
/// that is not a multi-byte lead).
fn seq_len(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// How many bytes at the end of `s` form the valid start of a character
/// not yet complete (0 when `s` ends on a boundary or in invalid bytes).
fn incomplete_tail(s: &[u8]) -> usize {
    for i in 1..=s.len().min(3) {
        let b = s[s.len() - i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = seq_len(b);
        return if need > i { i } else { 0 };
    }
    0
}

/// How many bytes of `buf` to hand out for a page of about `want` bytes:
/// `buf` holds up to 3 bytes beyond `want` (fewer at the end of the file);
/// `at_end` says `buf` reaches the end of the file, `finished` that the
/// file will not grow.
fn cut(buf: &[u8], want: usize, at_end: bool, finished: bool) -> usize {
    let want = want.min(buf.len());
    let mut n = want - incomplete_tail(&buf[..want]);
    if n == 0 && !buf.is_empty() {
        // Not even one character fits: hand out the first one whole.
        let first = seq_len(buf[0]).min(4);
        n = if first <= buf.len() {
            first
        } else if at_end && !finished {
            0
        } else {
            buf.len()
        };
    }
    if finished && at_end && n < buf.len() && want == buf.len() {
        // The file ends inside a character that will never be completed.
        n = buf.len();
    }
    n
}

/// Where a read starts: the attempt whose file is read, the byte offset,
/// and whether the client's cursor named an earlier attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    attempt: u32,
    offset: u64,
    moved: bool,
}

/// The start a client's `cursor` names for a run at `run_attempt`: a
/// cursor is `"<attempt>:<offset>"` of an attempt the run has had; an
/// earlier attempt's continues at the start of the current one. The offset
/// is checked against the file's length once it is known ([`check_len`]).
pub(crate) fn resolve(cursor: Option<&str>, run_attempt: u32) -> Result<Start> {
    let current = run_attempt.max(1);
    let Some(c) = cursor else {
        return Ok(Start {
            attempt: current,
            offset: 0,
            moved: false,
        });
    };
    let (a, o) = parse_cursor(c)?;
    if a > run_attempt {
        return Err(bad_cursor(
            c,
            &format!("the run is at attempt {run_attempt}"),
        ));
    }
    Ok(if a < run_attempt {
        Start {
            attempt: current,
            offset: 0,
            moved: true,
        }
    } else {
        Start {
            attempt: a,
            offset: o,
            moved: false,
        }
    })
}

/// Refuses an offset past the end of a file of `len` bytes.
pub(crate) fn check_len(cursor: Option<&str>, offset: u64, len: u64) -> Result<()> {
    if offset > len {
        return Err(bad_cursor(
            cursor.unwrap_or_default(),
            &format!("offset past the end of the log ({len} bytes)"),
        ));
    }
    Ok(())
}

/// How many bytes to step back from an offset so a read starts on the
/// first byte of a character: `before` holds the (up to 3) bytes before
/// the offset, `at` the byte at it. 0 unless `at` continues a valid
/// character started in `before` (a cursor is the client's: one inside a
/// character reads that character whole instead of U+FFFD).
pub(crate) fn snap_back(before: &[u8], at: u8) -> usize {
    if at & 0xC0 != 0x80 {
        return 0;
    }
    for back in 1..=before.len().min(3) {
        let b = before[before.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        return if seq_len(b) > back { back } else { 0 };
    }
    0
}

fn read_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::internal(format!("reading {}: {e}", path.display())).with_source(e)
}

#[async_trait]
impl LogSource for LocalLogSource {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        let Start {
            attempt,
            offset,
            moved,
        } = resolve(cursor, run.attempt)?;
        let path = self.engine.log_path(&run.run_id, attempt)?;
        let finished = run.status == RunStatus::Stopped;
        let unchanged = |complete: bool| LogChunk {
            log: String::new(),
            cursor: if moved {
                Some(format!("{attempt}:0"))
            } else {
                cursor.map(str::to_string)
            },
            complete,
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                check_len(cursor, offset, 0)?;
                return Ok(unchanged(finished));
            }
            Err(e) => return Err(read_error(&path, e)),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| read_error(&path, e))?
            .len();
        check_len(cursor, offset, len)?;
        let available = usize::try_from(len - offset).unwrap_or(usize::MAX);
        if available == 0 {
            return Ok(unchanged(finished));
        }
        let want = max_bytes.clamp(1, MAX_PAGE).min(available);
        let take = (want + 3).min(available);
        // Up to 3 bytes before the offset too, to find a character's start.
        let lead = offset.min(3);
        file.seek(SeekFrom::Start(offset - lead))
            .await
            .map_err(|e| read_error(&path, e))?;
        let mut buf = Vec::with_capacity(take + 3);
        (&mut file)
            .take(take as u64 + lead)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| read_error(&path, e))?;
        let lead = usize::try_from(lead).unwrap_or(0).min(buf.len());
        let back = buf.get(lead).map_or(0, |at| snap_back(&buf[..lead], *at));
        let offset = offset - back as u64;
        let buf = &buf[lead - back..];
        let available = available + back;
        let at_end = buf.len() == available;
        let n = cut(buf, want + back, at_end, finished);
        if n == 0 {
            return Ok(unchanged(false));
        }
        let next = offset + n as u64;
        Ok(LogChunk {
            log: String::from_utf8_lossy(&buf[..n]).into_owned(),
            cursor: Some(format!("{attempt}:{next}")),
            complete: finished && next == len,
        })
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_or_name_last_seen() {
        assert_eq!(parse_cursor("1:0").expect("valid"), (1, 0));
        assert_eq!(parse_cursor("3:12345").expect("valid"), (3, 12345));
        for bad in [
            "",
            "1",
            ":",
            "1:",
            ":5",
            "0:1",
            "a:1",
            "1:-1",
            "1:2:3",
            "🦀",
            "99999999999:0",
        ] {
            let e = parse_cursor(bad).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
            assert!(e.message().starts_with("last_seen:"), "{}", e.message());
        }
    }

    #[test]
    fn pages_never_split_characters() {
        let text = "aé日🦀b".as_bytes();
        // Every split point and page size concatenates to the text.
        for max in 1..=8 {
            let mut off = 0;
            let mut out = Vec::new();
            while off < text.len() {
                let window = &text[off..(off + max + 3).min(text.len())];
                let at_end = off + window.len() == text.len();
                let n = cut(window, max, at_end, false);
                assert!(n > 0, "progress at {off} with max {max}");
                assert!(
                    std::str::from_utf8(&window[..n]).is_ok(),
                    "split at {off}+{n}"
                );
                out.extend_from_slice(&window[..n]);
                off += n;
            }
            assert_eq!(out, text);
        }
    }

    #[test]
    fn incomplete_character_waits_unless_finished() {
        let crab = "🦀".as_bytes();
        // Two of four bytes written so far.
        assert_eq!(cut(&crab[..2], 10, true, false), 0);
        assert_eq!(cut(&crab[..2], 1, true, false), 0);
        // The process ended there: hand the bytes out (lossy).
        assert_eq!(cut(&crab[..2], 10, true, true), 2);
        let mut s = b"ab".to_vec();
        s.extend_from_slice(&crab[..3]);
        assert_eq!(cut(&s, 10, true, false), 2);
        // Invalid bytes are not held back.
        assert_eq!(cut(&[0xFF, 0xFE, b'a'], 2, true, false), 2);
    }
    /// A stopped run of `engine` whose current attempt's output is `text`.
    async fn run_with_output(engine: &LocalEngine, attempt: u32, text: &[u8]) -> Run {
        let def = crate::model::NewDefinition::new("logs", "local").into_definition();
        let mut run = Run::queued(&def, "default", "local", "owner");
        run.attempt = attempt;
        run.status = RunStatus::Stopped;
        let path = engine.log_path(&run.run_id, attempt).expect("path");
        tokio::fs::create_dir_all(path.parent().expect("dir"))
            .await
            .expect("mkdir");
        tokio::fs::write(&path, text).await.expect("write");
        run
    }

    #[tokio::test]
    async fn a_cursor_inside_a_character_reads_it_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(LocalEngine::new(dir.path().join("data")).expect("engine"));
        let source = LocalLogSource::new(engine.clone());
        let text = "a🦀日é\n";
        let run = run_with_output(&engine, 2, text.as_bytes()).await;
        for offset in 0..=text.len() {
            let cursor = format!("2:{offset}");
            let chunk = source
                .read(&run, Some(&cursor), 1 << 10)
                .await
                .expect("read");
            assert!(
                text.ends_with(&chunk.log),
                "from {cursor}: {:?} is not the rest of the text",
                chunk.log
            );
            let start = text.floor_char_boundary(offset);
            assert_eq!(chunk.log, &text[start..], "from {cursor}");
            assert!(chunk.complete);
        }
    }

    #[tokio::test]
    async fn cursors_are_checked_against_attempts_and_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(LocalEngine::new(dir.path().join("data")).expect("engine"));
        let source = LocalLogSource::new(engine.clone());
        let run = run_with_output(&engine, 2, b"hello\n").await;
        for bad in ["3:0", "2:7", "2:18446744073709551615", "0:0", "2:-1"] {
            let e = source.read(&run, Some(bad), 10).await.expect_err(bad);
            crate::testkit::logs::assert_bad_cursor(bad, &e);
        }
        // An earlier attempt's cursor continues at the current one's start.
        let c = source.read(&run, Some("1:99"), 10).await.expect("earlier");
        assert_eq!(c.log, "hello\n");
        assert_eq!(c.cursor.as_deref(), Some("2:6"));
    }

    proptest::proptest! {
        #[test]
        fn any_cursor_is_confined_to_the_runs_attempts_or_refused(
            cursor in proptest::prelude::any::<String>(),
            run_attempt in 1u32..5,
            len in 0u64..1000,
        ) {
            let decoded = resolve(Some(&cursor), run_attempt)
                .and_then(|s| check_len(Some(&cursor), s.offset, len).map(|()| s));
            crate::testkit::logs::assert_cursor_confined_or_refused(&cursor, decoded, |s| {
                s.attempt == run_attempt && s.offset <= len
            });
        }

        #[test]
        fn cursors_like_valid_ones_are_confined_or_refused(
            cursor in "[0-9]{1,12}:[0-9+-]{0,22}|[0-9:🦀]{0,8}",
            run_attempt in 1u32..5,
            len in 0u64..1000,
        ) {
            let decoded = resolve(Some(&cursor), run_attempt)
                .and_then(|s| check_len(Some(&cursor), s.offset, len).map(|()| s));
            crate::testkit::logs::assert_cursor_confined_or_refused(&cursor, decoded, |s| {
                s.attempt == run_attempt && s.offset <= len
            });
        }

        #[test]
        fn snapping_back_lands_on_a_character_start(
            text in "\\PC{0,12}",
            at in 0usize..64,
        ) {
            let bytes = text.as_bytes();
            let at = at.min(bytes.len());
            if at < bytes.len() {
                let lead = at.min(3);
                let back = snap_back(&bytes[at - lead..at], bytes[at]);
                proptest::prop_assert_eq!(at - back, text.floor_char_boundary(at));
            }
        }
    }
}
