//! [`CloudWatchLogs`]: a run's output from the CloudWatch Logs stream its
//! task's `awslogs` driver writes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::Client;
use chrono::Utc;
use flotilla::{Error, ErrorKind, LogChunk, LogSource, Result, Run, RunStatus};

use crate::engine::task_id;
use crate::settings::EcsSettings;
use flotilla_aws::{map_sdk_error, sdk_config};

/// Events asked for per GetLogEvents call.
const EVENTS_PER_CALL: i32 = 1000;
/// Empty pages one read follows before it returns (a cursor past them, not
/// complete), so a read stays bounded however long a stream's time gaps.
const EMPTY_PAGES_PER_READ: usize = 100;
/// Cursor prefix, so foreign cursors are recognised.
const CURSOR_PREFIX: &str = "cw1";

/// A position in a stream: the forward token a batch was read from (empty:
/// the head) and how many bytes of that batch's text were returned already.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    token: String,
    skip: usize,
}

impl Position {
    fn head() -> Self {
        Position {
            token: String::new(),
            skip: 0,
        }
    }

    fn encode(&self) -> String {
        format!("{CURSOR_PREFIX}:{}:{}", self.skip, self.token)
    }

    fn decode(cursor: &str) -> Result<Self> {
        let bad = || Error::invalid("last_seen: not a cursor of this log source");
        let mut parts = cursor.splitn(3, ':');
        if parts.next() != Some(CURSOR_PREFIX) {
            return Err(bad());
        }
        let skip = parts
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(bad)?;
        let token = parts.next().ok_or_else(bad)?.to_string();
        Ok(Position { token, skip })
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
            Some(c) => Position::decode(c)?,
            None => Position::head(),
        };
        let settled = self.settled(run);
        let Some((group, stream)) = self.stream_of(run) else {
            return Ok(LogChunk {
                log: String::new(),
                cursor: cursor.map(str::to_string),
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
                        cursor: cursor.map(str::to_string),
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
                    Some(pos.encode())
                } else {
                    cursor.map(str::to_string)
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
                cursor: Some(new_pos.encode()),
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
        let out = match req.send().await {
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

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let p = Position {
            token: "f/000123:with:colons".into(),
            skip: 17,
        };
        assert_eq!(Position::decode(&p.encode()).expect("decode"), p);
        assert_eq!(
            Position::decode(&Position::head().encode()).expect("head"),
            Position::head()
        );
        for bad in [
            "garbage",
            "🦀🦀",
            "-1",
            "::::",
            "cw1",
            "cw1:x:tok",
            "cw1:-1:tok",
        ] {
            let e = Position::decode(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
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
