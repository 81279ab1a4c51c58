//! [`CloudWatchLogs`]: a run's output from the CloudWatch Logs stream its
//! task's `awslogs` driver writes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::Client;
use chrono::Utc;
use flotilla::{Error, ErrorKind, LogChunk, LogSource, Result, Run, RunStatus};

use crate::engine::task_id;
use crate::settings::EcsSettings;
use flotilla_aws::{map_sdk_error, sdk_config, with_auth_retry};

/// Events asked for per GetLogEvents call.
const EVENTS_PER_CALL: i32 = 1000;
/// Empty pages one read follows before it returns (a cursor past them, not
/// complete), so a read stays bounded however long a stream's time gaps.
const EMPTY_PAGES_PER_READ: usize = 100;
/// Cursor prefix, so foreign cursors are recognised.
const CURSOR_PREFIX: &str = "cw2";
/// The longest forward token a cursor may carry.
const MAX_TOKEN: usize = 512;

/// A position in the stream of a run's current attempt: the forward token a
/// batch was read from (empty: the head) and how many bytes of that batch's
/// text were returned already.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    token: String,
    skip: usize,
}

fn bad_cursor(why: &str) -> Error {
    Error::invalid(format!(
        "last_seen: not a cursor of this run's CloudWatch log ({why})"
    ))
}

/// The tag binding a cursor to one run attempt (not a secret: the stream
/// read is always the run's own, whatever the cursor says).
fn attempt_tag(run_id: &str, attempt: u32) -> String {
    format!(
        "{:016x}",
        flotilla::hash::stable_hash(&[b"cloudwatch", run_id.as_bytes(), &attempt.to_le_bytes()])
    )
}

/// A decimal number of ASCII digits only (no sign, no spaces).
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Position {
    fn head() -> Self {
        Position {
            token: String::new(),
            skip: 0,
        }
    }

    /// `cw2:<attempt>:<tag>:<skip>:<forward token>` for `run`'s current
    /// attempt.
    fn encode(&self, run: &Run) -> String {
        format!(
            "{CURSOR_PREFIX}:{}:{}:{}:{}",
            run.attempt,
            attempt_tag(&run.run_id, run.attempt),
            self.skip,
            self.token
        )
    }

    /// The position `cursor` names in `run`'s current attempt. The cursor is
    /// the client's: one not of this form, of another run, of a later
    /// attempt, or with a token that is not a forward token is
    /// `InvalidInput` naming `last_seen`. A cursor of an earlier attempt of
    /// the run (it was retried since) reads the current attempt from its
    /// head.
    fn decode(cursor: &str, run: &Run) -> Result<Self> {
        let mut parts = cursor.splitn(5, ':');
        if parts.next() != Some(CURSOR_PREFIX) {
            return Err(bad_cursor("unknown format"));
        }
        let attempt: u32 = parts
            .next()
            .and_then(number)
            .filter(|a| *a >= 1)
            .ok_or_else(|| bad_cursor("bad attempt"))?;
        let tag = parts.next().ok_or_else(|| bad_cursor("no run tag"))?;
        let skip: usize = parts
            .next()
            .and_then(number)
            .ok_or_else(|| bad_cursor("bad offset"))?;
        let token = parts.next().ok_or_else(|| bad_cursor("no token"))?;
        let token_ok = token.is_empty()
            || (token.starts_with("f/")
                && token.len() <= MAX_TOKEN
                && token.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'=' | b'_' | b'-')
                }));
        if !token_ok {
            return Err(bad_cursor("not a forward token"));
        }
        if attempt > run.attempt {
            return Err(bad_cursor("of a later attempt than the run's"));
        }
        if tag != attempt_tag(&run.run_id, attempt) {
            return Err(bad_cursor("of another run"));
        }
        if attempt < run.attempt {
            return Ok(Position::head());
        }
        Ok(Position {
            token: token.to_string(),
            skip,
        })
    }
}

/// flotilla's [`LogSource`] for ECS runs, reading CloudWatch Logs.
///
/// - The stream is `<log_stream_prefix>/<container_name>/<task id>` in
///   `log_group`: what the task definition's `awslogs` driver writes. Each
///   log event is one line; the text read is the events' messages, each
///   followed by `\n`.
/// - `read` is GetLogEvents from the head, following `nextForwardToken`.
///   The cursor holds the token a batch was read from and how many bytes of
///   that batch were returned, so pages of any size never repeat or skip
///   text and never split a character. A token that comes back unchanged
///   means no new text: the end of what is written so far. An empty page
///   with a *new* token is not the end (AWS answers time gaps in a stream
///   with empty pages while more events follow): the read follows it, up
///   to a bound per read.
/// - The cursor is the client's (`last_seen`), so it is validated, never
///   trusted: `cw2:<attempt>:<run tag>:<offset>:<forward token>`, bound to
///   the run and attempt; the stream read is always the run's own. A
///   cursor of another run, of a later attempt, not of this form, or whose
///   offset does not fit the batch is `InvalidInput` naming `last_seen`
///   (400); one of an earlier attempt reads the current attempt from its
///   head (each attempt is a new task with its own stream).
/// - A stream that does not exist yet (the container has not started) is an
///   empty log, not an error.
/// - `complete` is true once the run is STOPPED, `log_settle_seconds` have
///   passed since it stopped (the driver's last lines may still be on their
///   way), and everything up to the cursor has been read.
#[derive(Debug, Clone)]
pub struct CloudWatchLogs {
    client: Client,
    settings: EcsSettings,
}

impl CloudWatchLogs {
    /// A log source with a client built from `settings`.
    pub async fn new(settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        let config = sdk_config(
            &settings.region,
            settings.endpoint_url.as_deref(),
            settings.credentials.as_ref(),
            settings.max_attempts,
        )
        .await;
        Self::from_client(Client::new(&config), settings)
    }

    /// A log source using an existing client.
    pub fn from_client(client: Client, settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        Ok(CloudWatchLogs { client, settings })
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The log group and stream of `run`'s current attempt, if it was
    /// submitted.
    pub fn stream_of(&self, run: &Run) -> Option<(String, String)> {
        let arn = run.engine_ref.as_deref().filter(|r| !r.is_empty())?;
        Some((
            self.settings.log_group.clone(),
            format!(
                "{}/{}/{}",
                self.settings.log_stream_prefix,
                self.settings.container_name,
                task_id(arn)
            ),
        ))
    }

    /// Creates the log group (with the configured retention) unless it
    /// exists.
    pub async fn ensure_log_group(&self) -> Result<()> {
        let group = &self.settings.log_group;
        match self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let already = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception());
                if !already {
                    return Err(map_sdk_error("CreateLogGroup", e));
                }
            }
        }
        if let Some(days) = self.settings.log_retention_days {
            self.client
                .put_retention_policy()
                .log_group_name(group)
                .retention_in_days(days)
                .send()
                .await
                .map_err(|e| map_sdk_error("PutRetentionPolicy", e))?;
        }
        Ok(())
    }

    fn settled(&self, run: &Run) -> bool {
        if run.status != RunStatus::Stopped {
            return false;
        }
        let settle = Duration::from_secs(self.settings.log_settle_seconds);
        match run.finished_at {
            Some(at) => (Utc::now() - at).to_std().unwrap_or_default() >= settle,
            None => true,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes ending on a
/// character boundary — or the first character when even that is longer.
fn page(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        end = text.chars().next().map(char::len_utf8).unwrap_or(0);
    }
    &text[..end]
}

#[async_trait]
impl LogSource for CloudWatchLogs {
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk> {
        let pos = match cursor {
            Some(c) => Position::decode(c, run)?,
            None => Position::head(),
        };
        let settled = self.settled(run);
        let Some((group, stream)) = self.stream_of(run) else {
            return Ok(LogChunk {
                log: String::new(),
                cursor: cursor.map(|_| pos.encode(run)),
                complete: settled,
            });
        };
        let mut pos = pos;
        let mut followed = 0;
        loop {
            let (text, next) = match self.page_at(&group, &stream, &pos.token).await {
                Ok(Some(page)) => page,
                // The container has not started writing yet.
                Ok(None) => {
                    return Ok(LogChunk {
                        log: String::new(),
                        cursor: cursor.map(|_| pos.encode(run)),
                        complete: settled && pos == Position::head(),
                    });
                }
                Err(err) => {
                    if err.kind() == ErrorKind::InvalidInput && cursor.is_some() {
                        return Err(Error::invalid(format!(
                            "last_seen: CloudWatch refused the cursor: {}",
                            err.message()
                        )));
                    }
                    return Err(err);
                }
            };
            let advanced = !next.is_empty() && next != pos.token;
            if text.is_empty() {
                if pos.skip != 0 {
                    return Err(Error::invalid(
                        "last_seen: the cursor does not fit this run's log",
                    ));
                }
                if advanced && followed < EMPTY_PAGES_PER_READ {
                    // An empty page with a new token is not the end: AWS
                    // answers time gaps with empty pages while more events
                    // follow. The end is a token that comes back unchanged.
                    followed += 1;
                    pos = Position {
                        token: next,
                        skip: 0,
                    };
                    continue;
                }
                let moved = followed > 0;
                let cursor = if moved {
                    Some(pos.encode(run))
                } else {
                    cursor.map(|_| pos.encode(run))
                };
                return Ok(LogChunk {
                    log: String::new(),
                    cursor,
                    // Unchanged token: the end. Still advancing after the
                    // read's budget of empty pages: more may follow.
                    complete: settled && !advanced,
                });
            }
            if pos.skip > text.len() || !text.is_char_boundary(pos.skip) {
                return Err(Error::invalid(
                    "last_seen: the cursor does not fit this run's log",
                ));
            }
            let rest = &text[pos.skip..];
            let chunk = page(rest, max_bytes.max(1));
            let consumed = pos.skip + chunk.len();
            let batch_done = consumed == text.len();
            let new_pos = if batch_done && advanced {
                Position {
                    token: next,
                    skip: 0,
                }
            } else {
                Position {
                    token: pos.token.clone(),
                    skip: consumed,
                }
            };
            // A non-empty batch is never the end: one more read from its
            // forward token tells.
            return Ok(LogChunk {
                log: chunk.to_string(),
                cursor: Some(new_pos.encode(run)),
                complete: false,
            });
        }
    }
}

impl CloudWatchLogs {
    /// One GetLogEvents page read forward from `token` (empty: the head):
    /// its text (each event's message and `\n`) and its forward token;
    /// `None` when the stream does not exist yet.
    async fn page_at(
        &self,
        group: &str,
        stream: &str,
        token: &str,
    ) -> Result<Option<(String, String)>> {
        let mut req = self
            .client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .limit(EVENTS_PER_CALL);
        if !token.is_empty() {
            req = req.next_token(token);
        }
        let out = match with_auth_retry("GetLogEvents", || req.clone().send()).await {
            Ok(o) => o,
            Err(e) => {
                let not_yet = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                if not_yet {
                    return Ok(None);
                }
                return Err(map_sdk_error("GetLogEvents", e));
            }
        };
        let mut text = String::new();
        for e in out.events() {
            text.push_str(e.message().unwrap_or(""));
            text.push('\n');
        }
        let next = out.next_forward_token().unwrap_or("").to_string();
        Ok(Some((text, next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, attempt: u32) -> Run {
        let def = flotilla::NewDefinition::new("a", "busybox:1").into_definition();
        let mut r = Run::queued(&def, "c", "ecs", "alice");
        r.run_id = id.into();
        r.attempt = attempt;
        r
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mine = run("run-a", 2);
        let p = Position {
            token: "f/000123/s".into(),
            skip: 17,
        };
        assert_eq!(
            Position::decode(&p.encode(&mine), &mine).expect("decode"),
            p
        );
        let head = Position::head();
        assert_eq!(
            Position::decode(&head.encode(&mine), &mine).expect("head"),
            head
        );
        let tag = attempt_tag("run-a", 2);
        for bad in [
            "garbage".to_string(),
            "🦀🦀".into(),
            "-1".into(),
            "::::".into(),
            "cw2".into(),
            "cw1:0:f/1".into(),
            format!("cw2:2:{tag}:x:f/1"),
            format!("cw2:2:{tag}:-1:f/1"),
            format!("cw2:2:{tag}:+1:f/1"),
            format!("cw2:0:{tag}:0:f/1"),
            format!("cw2:2:{tag}:0:b/1"),
            format!("cw2:2:{tag}:0:f/1:x"),
            format!("cw2:2:{tag}:0:f/🦀"),
            format!("cw2:2:{tag}:0:f/{}", "1".repeat(MAX_TOKEN)),
            format!("cw2:3:{}:0:f/1", attempt_tag("run-a", 3)),
            format!("cw2:2:{}:0:f/1", attempt_tag("run-b", 2)),
        ] {
            let e = Position::decode(&bad, &mine).expect_err(&bad);
            flotilla::testkit::logs::assert_bad_cursor(&bad, &e);
        }
    }

    #[test]
    fn a_cursor_of_an_earlier_attempt_reads_the_current_one_from_its_head() {
        let first = run("run-a", 1);
        let p = Position {
            token: "f/7".into(),
            skip: 3,
        };
        let retried = run("run-a", 2);
        assert_eq!(
            Position::decode(&p.encode(&first), &retried).expect("earlier attempt"),
            Position::head()
        );
        let e = Position::decode(&p.encode(&retried), &first).expect_err("later attempt");
        flotilla::testkit::logs::assert_bad_cursor("later", &e);
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_a_position_of_the_run_or_refused(cursor in proptest::prelude::any::<String>()) {
            let mine = run("run-a", 1);
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                Position::decode(&cursor, &mine),
                |p| p.token.is_empty() || p.token.starts_with("f/"),
            );
        }

        #[test]
        fn strings_like_cursors_are_positions_of_the_run_or_refused(
            cursor in "cw[12]:[0-9+-]{0,3}:[0-9a-f]{0,17}:[0-9+-]{0,21}:(f/|b/)?[a-z0-9/:🦀=+]{0,12}",
        ) {
            let mine = run("run-a", 1);
            let tag = attempt_tag("run-a", 1);
            flotilla::testkit::logs::assert_cursor_confined_or_refused(
                &cursor,
                Position::decode(&cursor, &mine),
                |p| cursor.starts_with(&format!("cw2:1:{tag}:")) && (p.token.is_empty() || p.token.starts_with("f/")),
            );
        }

        #[test]
        fn encoded_cursors_decode_to_the_same_position(
            token in "(f/[A-Za-z0-9/+=_-]{0,100})?",
            skip in proptest::prelude::any::<usize>(),
            attempt in 1u32..1000,
            id in "[a-z0-9-]{1,40}",
        ) {
            let mine = run(&id, attempt);
            let p = Position { token, skip };
            proptest::prop_assert_eq!(Position::decode(&p.encode(&mine), &mine).expect("decode"), p);
        }

        #[test]
        fn cursors_of_another_run_are_refused(
            token in "(f/[A-Za-z0-9/+=_-]{0,100})?",
            skip in proptest::prelude::any::<usize>(),
            attempt in 1u32..1000,
            a in "[a-z0-9-]{1,40}",
            b in "[a-z0-9-]{1,40}",
        ) {
            proptest::prop_assume!(a != b);
            let theirs = run(&a, attempt);
            let mine = run(&b, attempt);
            let cursor = Position { token, skip }.encode(&theirs);
            let e = Position::decode(&cursor, &mine);
            proptest::prop_assert!(e.is_err(), "{} was accepted for run {}", cursor, b);
            if let Err(e) = e {
                flotilla::testkit::logs::assert_bad_cursor(&cursor, &e);
            }
        }
    }

    #[test]
    fn pages_never_split_characters() {
        let t = "a🦀b";
        assert_eq!(page(t, 1), "a");
        assert_eq!(page(&t[1..], 2), "🦀");
        assert_eq!(page(&t[1..], 4), "🦀");
        assert_eq!(page(&t[1..], 5), "🦀b");
    }
}
