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
/// - A cursor not of this form, of a later attempt than the run's, or past
///   the end of the file is `InvalidInput` naming `last_seen`.
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

#[async_trait]
impl LogSource for LocalLogSource {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        let (attempt, offset) = match cursor {
            None => (run.attempt.max(1), 0),
            Some(c) => {
                let (a, o) = parse_cursor(c)?;
                if a > run.attempt {
                    return Err(bad_cursor(
                        c,
                        &format!("the run is at attempt {}", run.attempt),
                    ));
                }
                if a < run.attempt {
                    (run.attempt, 0)
                } else {
                    (a, o)
                }
            }
        };
        let moved = cursor.is_some_and(|c| parse_cursor(c).is_ok_and(|(a, _)| a != attempt));
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
                if offset > 0 {
                    return Err(bad_cursor(cursor.unwrap_or_default(), "the log is empty"));
                }
                return Ok(unchanged(finished));
            }
            Err(e) => {
                return Err(
                    Error::internal(format!("reading {}: {e}", path.display())).with_source(e)
                );
            }
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| {
                Error::internal(format!("reading {}: {e}", path.display())).with_source(e)
            })?
            .len();
        if offset > len {
            return Err(bad_cursor(
                cursor.unwrap_or_default(),
                &format!("offset past the end of the log ({len} bytes)"),
            ));
        }
        let available = usize::try_from(len - offset).unwrap_or(usize::MAX);
        if available == 0 {
            return Ok(unchanged(finished));
        }
        let want = max_bytes.clamp(1, MAX_PAGE).min(available);
        let take = (want + 3).min(available);
        file.seek(SeekFrom::Start(offset)).await.map_err(|e| {
            Error::internal(format!("reading {}: {e}", path.display())).with_source(e)
        })?;
        let mut buf = Vec::with_capacity(take);
        (&mut file)
            .take(take as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| {
                Error::internal(format!("reading {}: {e}", path.display())).with_source(e)
            })?;
        let at_end = buf.len() == available;
        let n = cut(&buf, want, at_end, finished);
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

#[cfg(test)]
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
}
