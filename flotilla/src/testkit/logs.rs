//! The [`LogSource`] conformance suite.
//!
//! The suite makes a run write known text through an [`Engine`] and the
//! backend's [`EngineProbe`] (the same probe the engine suite uses), then
//! reads it back through the log source under test.

use std::time::Duration;

use super::engine::{
    EngineProbe, RunSpec, TaskEnd, WAIT_LIMIT, finish, make, submit, wait_running, wait_stopped,
};
use crate::engine::Engine;
use crate::error::ErrorKind;
use crate::logs::{LogChunk, LogSource};
use crate::model::{Run, RunStatus};

/// The text the suite's run writes: lines of ASCII and 2-, 3- and 4-byte
/// UTF-8 characters, each ending with `\n`.
pub fn suite_text() -> String {
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "line {i:02}: plain ascii, grüße ä ö ü ß, 日本語のテキスト, crab 🦀 rocket 🚀\n"
        ));
    }
    text
}

/// Runs every check of the [`LogSource`] contract against `source`, whose
/// runs execute on `engine` (driven through `probe`). Panics on the first
/// violation.
///
/// Checks: before the run starts the text is empty and not complete; read
/// page by page with small `max_bytes` (so pages end inside multi-byte
/// characters) the pages concatenate to exactly the written text with no
/// repeats or gaps and never split a character; `complete` stays false
/// while the run is not STOPPED and becomes true once it is and all was
/// read; reading again from the start yields the same text; a cursor that
/// is not the source's is `InvalidInput`.
pub async fn log_source_suite(source: &dyn LogSource, engine: &dyn Engine, probe: &EngineProbe) {
    let text = suite_text();
    let (run, def) = make(probe, RunSpec::new().output(text.clone())).await;

    // Before start: empty, not complete.
    let mut queued = run.clone();
    queued.status = RunStatus::Queued;
    let first = read(source, &queued, None, 1024).await;
    assert_eq!(first.log, "", "nothing was written yet: {first:?}");
    assert!(!first.complete, "a queued run's log is not complete");

    let s = submit(engine, probe, &run, &def).await;
    let mut live = run.clone();
    live.status = RunStatus::Running;
    live.engine_ref = Some(s.engine_ref.clone());
    if s.instance.is_some() {
        live.instance = s.instance.clone();
    }
    let u = wait_running(engine, &live).await;
    live.started_at = u.started_at.or(live.started_at);
    if u.instance.is_some() {
        live.instance = u.instance.clone();
    }

    // Small pages while running, until all the text arrived.
    let (got, cursor) = read_until(source, &live, first.cursor.clone(), 7, text.len(), false).await;
    assert_eq!(
        got, text,
        "pages read while running must concatenate to the text"
    );

    // Nothing new, still not complete, while running.
    let again = read(source, &live, cursor.as_deref(), 7).await;
    assert_eq!(again.log, "", "no text may repeat: {again:?}");
    assert!(!again.complete, "a running run's log is not complete");
    let cursor = again.cursor.or(cursor);

    // Stop the run.
    finish(probe, &live, TaskEnd::Exit(0)).await;
    let u = wait_stopped(engine, &live).await;
    let mut stopped = live.clone();
    stopped.status = RunStatus::Stopped;
    stopped.exit_code = u.exit_code;
    stopped.finished_at = u.finished_at;

    // From the last cursor: no new text, eventually complete.
    let give_up = tokio::time::Instant::now() + WAIT_LIMIT;
    let mut cursor = cursor;
    loop {
        let c = read(source, &stopped, cursor.as_deref(), 7).await;
        assert_eq!(c.log, "", "text after the end must not appear: {c:?}");
        if c.complete {
            break;
        }
        cursor = c.cursor.or(cursor);
        assert!(
            tokio::time::Instant::now() < give_up,
            "the log of a stopped, fully read run never became complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // From the start again, tiny pages: the same text, complete at the end.
    let (got, _) = read_until(source, &stopped, None, 5, text.len(), true).await;
    assert_eq!(
        got, text,
        "re-reading from the start must give the same text"
    );
    // One big page.
    let (got, _) = read_until(source, &stopped, None, 1 << 20, text.len(), true).await;
    assert_eq!(got, text, "a large max_bytes must give the same text");

    // Cursors that are not the source's.
    for bad in ["garbage", "🦀🦀", "-1", "::::"] {
        let e = source
            .read(&stopped, Some(bad), 100)
            .await
            .expect_err("a garbage cursor must be rejected");
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "garbage cursor {bad:?} must be InvalidInput, got {e}"
        );
    }
}

async fn read(source: &dyn LogSource, run: &Run, cursor: Option<&str>, max: usize) -> LogChunk {
    source.read(run, cursor, max).await.unwrap_or_else(|e| {
        panic!(
            "read of run {} from {cursor:?} failed: {e} ({})",
            run.run_id,
            e.kind()
        )
    })
}

/// Reads pages of at most about `max` bytes until `want` bytes arrived (and,
/// when `until_complete`, `complete` is true). Checks every page.
async fn read_until(
    source: &dyn LogSource,
    run: &Run,
    mut cursor: Option<String>,
    max: usize,
    want: usize,
    until_complete: bool,
) -> (String, Option<String>) {
    let give_up = tokio::time::Instant::now() + WAIT_LIMIT;
    let mut got = String::new();
    loop {
        let c = read(source, run, cursor.as_deref(), max).await;
        // "At most about max_bytes": a page may exceed it by less than one
        // character so that it never splits one.
        assert!(
            c.log.len() < max + 4,
            "a page of {} bytes for max_bytes {max}",
            c.log.len()
        );
        assert!(
            !c.log.contains('\u{FFFD}'),
            "a page split a UTF-8 character: {:?}",
            c.log
        );
        got.push_str(&c.log);
        if c.complete {
            assert_eq!(
                got.len(),
                want,
                "complete before all the text was read: {got:?}"
            );
        }
        if !c.log.is_empty() {
            assert!(
                c.cursor.is_some(),
                "text was read, so the cursor must be set"
            );
        }
        if c.cursor.is_some() {
            cursor = c.cursor;
        }
        assert!(
            got.len() <= want,
            "more text than written (a repeat?): {got:?}"
        );
        if got.len() == want && (!until_complete || c.complete) {
            return (got, cursor);
        }
        if c.log.is_empty() {
            assert!(
                tokio::time::Instant::now() < give_up,
                "waited {WAIT_LIMIT:?} for the log; got {} of {want} bytes: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The rule every log source's cursor decoding follows, checked for one
/// `cursor` a client sent (call it from a property test over arbitrary
/// strings): `decoded` — what the source made of `cursor` for one run — is
/// either refused as a bad `last_seen` ([`assert_bad_cursor`]) or a
/// position that `confined` accepts (inside that run's own log). Panics
/// otherwise; a decoder that panics fails the caller's test too.
#[track_caller]
pub fn assert_cursor_confined_or_refused<P: std::fmt::Debug>(
    cursor: &str,
    decoded: crate::Result<P>,
    confined: impl FnOnce(&P) -> bool,
) {
    match decoded {
        Ok(p) => assert!(
            confined(&p),
            "cursor {cursor:?} decoded to {p:?}, outside the run's log"
        ),
        Err(e) => assert_bad_cursor(cursor, &e),
    }
}

/// A refused cursor is `InvalidInput` and its message names `last_seen`
/// (so the HTTP layer answers 400 naming the field).
#[track_caller]
pub fn assert_bad_cursor(cursor: &str, e: &crate::Error) {
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidInput,
        "cursor {cursor:?} must be refused as InvalidInput, got {e}"
    );
    assert!(
        e.message().contains("last_seen"),
        "the refusal of cursor {cursor:?} must name last_seen: {e}"
    );
}

/// Cursors a client could send instead of `valid`: each run of digits
/// replaced by its neighbours (so offsets land inside characters), by 0
/// and by numbers out of every integer range; `valid` cut at each
/// character boundary; a multi-byte character inserted at each boundary;
/// and a few strings of no format at all.
pub fn cursor_variants(valid: &str) -> Vec<String> {
    let mut out = vec![
        String::new(),
        "garbage".to_string(),
        "🦀🦀".to_string(),
        "-1".to_string(),
        "::::".to_string(),
        format!("{valid}{valid}"),
    ];
    let bytes = valid.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &valid[start..i];
        let n: u128 = digits.parse().unwrap_or(0);
        let mut with = |d: String| out.push(format!("{}{d}{}", &valid[..start], &valid[i..]));
        for delta in 1..=3u128 {
            with((n + delta).to_string());
            if n >= delta {
                with((n - delta).to_string());
            }
        }
        with("0".to_string());
        with(u64::MAX.to_string());
        with((u128::from(u64::MAX) + 1).to_string());
        with("9".repeat(40));
        with(format!("-{digits}"));
        with(format!("+{digits}"));
    }
    for (at, _) in valid.char_indices().skip(1) {
        out.push(valid[..at].to_string());
        out.push(format!("{}🦀{}", &valid[..at], &valid[at..]));
    }
    out.retain(|c| c != valid);
    out.sort();
    out.dedup();
    out
}

/// Reads `run`'s log from each of `cursors` (see [`cursor_variants`]):
/// every read either is refused as a bad `last_seen` or returns text that
/// `confined` accepts (text of this run only, no character split); the
/// cursor it returns reads on under the same rule. Panics otherwise.
pub async fn forged_cursors_are_refused_or_confined(
    source: &dyn LogSource,
    run: &Run,
    cursors: &[String],
    max_bytes: usize,
    confined: &(dyn Fn(&str) -> bool + Sync),
) {
    for cursor in cursors {
        match source.read(run, Some(cursor), max_bytes).await {
            Err(e) => assert_bad_cursor(cursor, &e),
            Ok(chunk) => {
                assert!(
                    confined(&chunk.log),
                    "cursor {cursor:?} read text outside the run's log: {:?}",
                    chunk.log
                );
                if let Some(next) = chunk.cursor.as_deref().filter(|n| n != cursor) {
                    match source.read(run, Some(next), max_bytes).await {
                        Err(e) => panic!(
                            "the cursor {next:?} returned after forged cursor {cursor:?} \
                             must read on, got {e}"
                        ),
                        Ok(c) => assert!(
                            confined(&c.log),
                            "cursor {next:?} (after {cursor:?}) read text outside the run's \
                             log: {:?}",
                            c.log
                        ),
                    }
                }
            }
        }
    }
}
