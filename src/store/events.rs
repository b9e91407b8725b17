//! The lifecycle event stream ([`super::keys::Keys::events`]), read as typed
//! [`Event`]s. Scripts append one entry per call (`emit` in
//! `lua/lib/common.lua`); this module is the only code that decodes entries,
//! so how transitions are packed into entries can change here and in the
//! scripts without any reader noticing.
//!
//! Every event has an [`EventId`]: the stream entry's id and the event's
//! index in that entry. Ids order all events, and reading "after an id" is
//! exact whatever the packing.
//!
//! Two ways to read: [`Store::replay_events`] pages through a range (and says
//! when the range's start was trimmed away), and an [`EventReader`] follows
//! the stream live on a connection of its own, riding out Redis outages.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;

use super::Store;
use crate::error::{Error, Result};
use crate::task::{Priority, TaskStatus};

/// Where an event sits in the stream: its entry's id and its index in the
/// entry. Written `<ms>-<seq>-<index>`; ordered as the stream is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Entry id, milliseconds part.
    pub ms: u64,
    /// Entry id, sequence part.
    pub seq: u64,
    /// The event's place in its entry (0 for the first).
    pub index: u32,
}

impl EventId {
    /// Before every event: reading after it reads from the start.
    pub const ZERO: EventId = EventId {
        ms: 0,
        seq: 0,
        index: 0,
    };

    /// The stream entry holding the event, as Redis writes it (`<ms>-<seq>`).
    fn entry(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    /// Parses a stream entry id (`<ms>-<seq>`); its first event.
    fn of_entry(entry: &str) -> Option<EventId> {
        let (ms, seq) = entry.split_once('-')?;
        Some(EventId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
            index: 0,
        })
    }

    /// Whether `self` names an event in an entry after `entry`'s.
    fn entry_after(&self, entry: &EventId) -> bool {
        (self.ms, self.seq) > (entry.ms, entry.seq)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.ms, self.seq, self.index)
    }
}

impl FromStr for EventId {
    type Err = Error;

    /// Parses `<ms>-<seq>-<index>`, the form [`fmt::Display`] writes.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Validation(format!("event id {s:?} is not <ms>-<seq>-<index>"));
        let mut parts = s.splitn(3, '-');
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (ms, seq, index) = (number(), number(), number());
        match (ms, seq, index) {
            (Some(ms), Some(seq), Some(index)) => Ok(EventId {
                ms,
                seq,
                index: u32::try_from(index).map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// What happened to the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Created (QUEUED).
    Created,
    /// An attempt started (PROCESSING).
    Started,
    /// Completed.
    Completed,
    /// Failed for good (FAILED).
    Failed,
    /// An attempt failed or ran out of time; the task is QUEUED for a retry.
    Retrying,
    /// Retried by a caller after it had ended (QUEUED again).
    Retried,
    /// Cancelled.
    Cancelled,
    /// Ran out of time for good (TIMEOUT).
    TimedOut,
    /// Handed back unfinished by its worker (QUEUED, not an attempt lost).
    Requeued,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Retrying,
        EventKind::Retried,
        EventKind::Cancelled,
        EventKind::TimedOut,
        EventKind::Requeued,
    ];

    /// Its name on the stream and on the wire (`created`, `timeout` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Retrying => "retrying",
            EventKind::Retried => "retried",
            EventKind::Cancelled => "cancelled",
            EventKind::TimedOut => "timeout",
            EventKind::Requeued => "requeued",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One transition of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Its place in the stream.
    pub id: EventId,
    /// What happened.
    pub kind: EventKind,
    /// The task.
    pub task_id: String,
    /// The task's agent.
    pub agent_id: String,
    /// The task's owner (None for tasks created without one).
    pub owner_id: Option<String>,
    /// The task's type.
    pub task_type: String,
    /// The task's status after the transition.
    pub status: TaskStatus,
    /// When it happened (Unix ms, the store's clock).
    pub at_ms: i64,
    /// The attempt it concerns (1 for the first), for attempt events.
    pub attempt: Option<u32>,
    /// The status before (cancelled, retried).
    pub previous_status: Option<TaskStatus>,
    /// The error (failed, timeout, retrying).
    pub error_message: Option<String>,
    /// The worker of the attempt (started).
    pub worker_id: Option<String>,
    /// How long the attempt ran (completed).
    pub duration_ms: Option<u64>,
    /// When the retry is due (retrying).
    pub run_at_ms: Option<i64>,
    /// The task's priority (created).
    pub priority: Option<Priority>,
}

/// Decodes one stream entry into its events (empty for an entry this
/// version cannot read, which is logged, not fatal: a reader must go on).
fn decode_entry(entry_id: &str, fields: HashMap<String, String>) -> Vec<Event> {
    let Some(id) = EventId::of_entry(entry_id) else {
        tracing::warn!(entry_id, "event stream entry with a malformed id skipped");
        return Vec::new();
    };
    match decode_one(id, &fields) {
        Some(event) => vec![event],
        None => {
            tracing::warn!(
                entry_id,
                ?fields,
                "event stream entry not understood, skipped"
            );
            Vec::new()
        }
    }
}

fn decode_one(id: EventId, f: &HashMap<String, String>) -> Option<Event> {
    let text = |name: &str| f.get(name).filter(|v| !v.is_empty()).cloned();
    let number = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok());
    Some(Event {
        id,
        kind: EventKind::parse(f.get("type")?)?,
        task_id: f.get("taskId")?.clone(),
        agent_id: f.get("agentId")?.clone(),
        owner_id: text("ownerId"),
        task_type: f.get("taskType").cloned().unwrap_or_default(),
        status: TaskStatus::parse(f.get("status")?)?,
        at_ms: number("ts")?,
        attempt: number("attempt").and_then(|n| u32::try_from(n).ok()),
        previous_status: f.get("previousStatus").and_then(|s| TaskStatus::parse(s)),
        error_message: text("errorMessage"),
        worker_id: text("workerId"),
        duration_ms: number("durationMs").and_then(|n| u64::try_from(n).ok()),
        run_at_ms: number("runAt"),
        priority: f.get("priority").and_then(|p| Priority::parse(p)),
    })
}

/// Decodes stream entries, keeping only events after `after`.
fn decode_after(entries: Vec<(String, HashMap<String, String>)>, after: EventId) -> Vec<Event> {
    entries
        .into_iter()
        .flat_map(|(id, fields)| decode_entry(&id, fields))
        .filter(|e| e.id > after)
        .collect()
}

/// A page of [`Store::replay_events`].
#[derive(Debug)]
pub struct Replay {
    /// Events after the id asked for, oldest first.
    pub events: Vec<Event>,
    /// Events after the id asked for were trimmed from the stream (or the
    /// stream was reset, e.g. emptied): `events` is not all that happened
    /// since, and whoever asked must re-read state.
    pub trimmed: bool,
    /// More events may follow the last one: ask again after it.
    pub more: bool,
}

/// The most events one replay page holds.
pub const MAX_REPLAY_PAGE: usize = 1000;

/// What `XINFO STREAM` says about the stream's ends.
struct StreamEnds {
    /// The newest id ever added (stays after the entry is trimmed).
    last_generated: EventId,
    /// The oldest entry kept (None when the stream is empty).
    first_entry: Option<EventId>,
    /// The newest id ever removed by `XDEL` (Redis 7+; trimming does not
    /// move it).
    max_deleted: Option<EventId>,
}

impl StreamEnds {
    /// Whether an event after `after` may be gone: `after` is older than the
    /// oldest entry kept (trimmed; the entry just before it counts too, as
    /// the stream cannot tell), or ahead of anything the stream ever held
    /// (a reset stream). [`EventId::ZERO`] means "what the stream holds" and
    /// is never trimmed.
    fn lost_after(&self, after: EventId) -> bool {
        if after == EventId::ZERO {
            return false;
        }
        if after.entry_after(&self.last_generated) {
            return true;
        }
        let trimmed = match self.first_entry {
            Some(first) => first.entry_after(&after),
            // Empty: everything up to the newest id was removed.
            None => self.last_generated.entry_after(&after),
        };
        let deleted = self.max_deleted.is_some_and(|d| d.entry_after(&after));
        trimmed || deleted
    }
}

/// `XINFO STREAM` of `key`; None when the stream does not exist.
async fn stream_ends(client: &impl StreamsInterface, key: &str) -> Result<Option<StreamEnds>> {
    let info: Value = match client.xinfo_stream(key, false, None).await {
        Ok(v) => v,
        Err(e) if e.details().contains("no such key") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let pairs: Vec<(String, Value)> = match info {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = k.as_string() {
                    out.push((k, v));
                }
            }
            out
        }
        other => {
            return Err(Error::Reply {
                script: "XINFO STREAM",
                detail: format!("unexpected reply {other:?}"),
            });
        }
    };
    let id_of = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_string())
            .and_then(|s| EventId::of_entry(&s))
    };
    let first_entry = pairs
        .iter()
        .find(|(k, _)| k == "first-entry")
        .and_then(|(_, v)| match v {
            Value::Array(parts) => parts.first()?.as_string(),
            _ => None,
        })
        .and_then(|s| EventId::of_entry(&s));
    Ok(Some(StreamEnds {
        last_generated: id_of("last-generated-id").unwrap_or_default(),
        first_entry,
        max_deleted: id_of("max-deleted-entry-id"),
    }))
}

impl Store {
    /// Events after `after` (exclusive), oldest first, at most `limit` (up
    /// to [`MAX_REPLAY_PAGE`]); [`Replay::more`] says to ask again after the
    /// last one, [`Replay::trimmed`] that events after `after` are gone.
    pub async fn replay_events(&self, after: EventId, limit: usize) -> Result<Replay> {
        let limit = limit.clamp(1, MAX_REPLAY_PAGE);
        let key = self.keys().events();
        let client = self.client();
        // Entries first, the stream's ends second: trimming in between can
        // only make the answer say "trimmed" too often, never miss it.
        let entries: Vec<(String, HashMap<String, String>)> = client
            .xrange_values(&key, after.entry(), "+", Some(limit as u64 + 1))
            .await?;
        let ends = stream_ends(&client, &key).await?;
        let fetched = entries.len();
        let mut events = decode_after(entries, after);
        // The start entry is read again (it may hold events after `after`),
        // so one more than asked tells whether more follow.
        let more = fetched > limit || events.len() > limit;
        events.truncate(limit);
        let trimmed = match ends {
            Some(ends) => ends.lost_after(after),
            None => after != EventId::ZERO,
        };
        Ok(Replay {
            events,
            trimmed,
            more,
        })
    }

    /// The id of the newest event (ZERO when there never was one): follow
    /// after it to see only what happens from now on.
    pub async fn last_event_id(&self) -> Result<EventId> {
        let client = self.client();
        let key = self.keys().events();
        let Some(ends) = stream_ends(&client, &key).await? else {
            return Ok(EventId::ZERO);
        };
        // The newest entry's last event: re-read it, it may be packed.
        let entries: Vec<(String, HashMap<String, String>)> = client
            .xrange_values(&key, ends.last_generated.entry(), "+", Some(1))
            .await?;
        let newest = decode_after(entries, EventId::ZERO).pop().map(|e| e.id);
        Ok(newest.unwrap_or(EventId {
            index: u32::MAX,
            ..ends.last_generated
        }))
    }

    /// A reader that follows the stream after `after` on a connection of its
    /// own (the connection is made by the first [`EventReader::next`]).
    pub fn event_reader(&self, after: EventId) -> Result<EventReader> {
        // Checked now, so a bad URL fails here and not on every read.
        super::redis_builder(&self.inner.redis_url)?;
        Ok(EventReader {
            client: None,
            redis_url: self.inner.redis_url.clone(),
            key: self.keys().events(),
            after,
            check_trim: true,
            partial: after != EventId::ZERO && after.index != u32::MAX,
            failures: 0,
            block: Duration::from_secs(2),
        })
    }
}

/// What one [`EventReader::next`] read.
#[derive(Debug)]
pub enum Read {
    /// Events after the previous position, oldest first; empty when none
    /// came within the read's wait.
    Events(Vec<Event>),
    /// Events after the reader's position were trimmed before it read them
    /// (it fell further behind than the stream keeps, or the stream was
    /// reset); the reader goes on after `resumed_after`, the newest event.
    Trimmed {
        /// Where the reader was.
        lost_after: EventId,
        /// Where it goes on from.
        resumed_after: EventId,
    },
}

/// Events a reader takes per read.
const READ_BATCH: u64 = 500;

/// Follows the event stream live (blocking `XREAD` on its own connection).
/// A read that fails is retried with backoff inside [`EventReader::next`],
/// from the same position: an outage delays events, it never loses or
/// repeats one.
pub struct EventReader {
    /// Made by the first read; dropped after a failed connect, so the next
    /// read starts from a fresh client.
    client: Option<Client>,
    redis_url: String,
    key: String,
    after: EventId,
    /// Check for trimming on the next read (first read, after a failure,
    /// after a full batch: the times the reader may be behind).
    check_trim: bool,
    /// The position may be inside an entry (a seed from outside).
    partial: bool,
    failures: u32,
    block: Duration,
}

impl EventReader {
    /// Where the reader is: the last event it returned.
    pub fn position(&self) -> EventId {
        self.after
    }

    /// Moves the reader to `after` (the next read returns what follows it).
    pub fn seek(&mut self, after: EventId) {
        self.after = after;
        self.partial = after != EventId::ZERO && after.index != u32::MAX;
        self.check_trim = true;
    }

    /// How long one read waits for new events (default 2 s).
    pub fn set_block(&mut self, block: Duration) {
        self.block = block.max(Duration::from_millis(1));
    }

    /// The next events after the reader's position. Waits up to the block
    /// time for one; Redis errors are logged and retried with backoff (the
    /// call returns only with events, an empty read, or a trim).
    pub async fn next(&mut self) -> Read {
        loop {
            match self.read_once().await {
                Ok(read) => {
                    if self.failures > 0 {
                        tracing::info!(after = %self.after, "event reader reading again");
                    }
                    self.failures = 0;
                    return read;
                }
                Err(e) => {
                    self.failures += 1;
                    self.check_trim = true;
                    let wait = backoff(self.failures);
                    tracing::warn!(error = %e, attempt = self.failures, ?wait, "event stream read failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn read_once(&mut self) -> Result<Read> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let client = super::redis_builder(&self.redis_url)?.build()?;
                if let Err(e) = client.init().await {
                    let _ = client.quit().await;
                    return Err(e.into());
                }
                self.client = Some(client.clone());
                client
            }
        };
        if self.check_trim {
            let ends = stream_ends(&client, &self.key).await?;
            let lost = match &ends {
                Some(ends) => ends.lost_after(self.after),
                None => self.after != EventId::ZERO,
            };
            if lost {
                let lost_after = self.after;
                let resumed_after = match ends {
                    Some(ends) => EventId {
                        index: u32::MAX,
                        ..ends.last_generated
                    },
                    None => EventId::ZERO,
                };
                self.after = resumed_after;
                return Ok(Read::Trimmed {
                    lost_after,
                    resumed_after,
                });
            }
            self.check_trim = false;
        }
        if self.partial {
            // Seeded inside an entry: the rest of that entry first.
            let entry = self.after.entry();
            let rest: Vec<(String, HashMap<String, String>)> = client
                .xrange_values(&self.key, entry.as_str(), entry.as_str(), Some(1))
                .await?;
            self.partial = false;
            let events = decode_after(rest, self.after);
            if let Some(last) = events.last() {
                self.after = last.id;
                return Ok(Read::Events(events));
            }
        }
        // The reader returns whole entries, so its position is the last
        // event of an entry: read after that entry.
        let reply: Value = client
            .xread(
                Some(READ_BATCH),
                Some(self.block.as_millis() as u64),
                self.key.as_str(),
                self.after.entry(),
            )
            .await?;
        // Nothing within the block time: a nil reply.
        let entries: Vec<(String, HashMap<String, String>)> = match reply {
            Value::Null => Vec::new(),
            reply => reply
                .into_xread_response::<String, String, String, String>()?
                .into_values()
                .flatten()
                .collect(),
        };
        if entries.len() as u64 >= READ_BATCH {
            self.check_trim = true;
        }
        let events = decode_after(entries, self.after);
        if let Some(last) = events.last() {
            self.after = last.id;
        }
        Ok(Read::Events(events))
    }

    /// Closes the reader's connection.
    pub async fn close(self) {
        if let Some(client) = self.client {
            // A cancelled blocking XREAD holds the connection until its
            // block time ends, and QUIT waits behind it: send it, do not
            // wait for it (the connection closes by itself after the block).
            let _ = tokio::time::timeout(Duration::from_millis(100), client.quit()).await;
        }
    }
}

/// Wait before retry `n` (1-based): 50 ms doubling to 2 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis((50u64 << n.min(6).saturating_sub(1)).min(2_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_print_parse_and_order_as_the_stream() {
        let a = EventId {
            ms: 5,
            seq: 1,
            index: 0,
        };
        let b = EventId { index: 2, ..a };
        let c = EventId {
            ms: 5,
            seq: 2,
            index: 0,
        };
        assert!(EventId::ZERO < a && a < b && b < c);
        assert_eq!(b.to_string(), "5-1-2");
        assert_eq!("5-1-2".parse::<EventId>().unwrap(), b);
        for bad in ["", "5-1", "5-1-x", "a-1-0", "5-1-2-3", "5-1-99999999999"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_entry_decodes_to_a_typed_event() {
        let fields: HashMap<String, String> = [
            ("type", "failed"),
            ("taskId", "task_1"),
            ("agentId", "echo"),
            ("ownerId", "alice"),
            ("taskType", "summarise"),
            ("status", "FAILED"),
            ("ts", "1700000000000"),
            ("attempt", "3"),
            ("errorMessage", "boom"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let events = decode_entry("1700000000000-4", fields.clone());
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id.to_string(), "1700000000000-4-0");
        assert_eq!(e.kind, EventKind::Failed);
        assert_eq!(e.owner_id.as_deref(), Some("alice"));
        assert_eq!(e.task_type, "summarise");
        assert_eq!(e.status, TaskStatus::Failed);
        assert_eq!(e.attempt, Some(3));
        assert_eq!(e.error_message.as_deref(), Some("boom"));

        let mut unknown = fields;
        unknown.insert("type".into(), "exploded".into());
        assert!(decode_entry("1-1", unknown).is_empty());
    }

    #[test]
    fn a_trim_is_told_when_the_position_is_older_than_the_first_entry() {
        let id = |ms, seq| EventId { ms, seq, index: 0 };
        let ends = StreamEnds {
            last_generated: id(100, 0),
            first_entry: Some(id(51, 0)),
            max_deleted: Some(EventId::ZERO),
        };
        assert!(!ends.lost_after(EventId::ZERO));
        assert!(!ends.lost_after(id(60, 0)));
        assert!(!ends.lost_after(EventId {
            index: 9,
            ..id(51, 0)
        }));
        assert!(ends.lost_after(id(40, 0)), "older than the first entry");
        assert!(ends.lost_after(id(50, 9)), "just before it: cannot tell");
        assert!(ends.lost_after(id(101, 0)), "ahead of the stream: reset");
        let emptied = StreamEnds {
            first_entry: None,
            ..ends
        };
        assert!(emptied.lost_after(id(60, 0)));
        assert!(!emptied.lost_after(id(100, 0)));
        let xdel = StreamEnds {
            max_deleted: Some(id(70, 0)),
            ..ends
        };
        assert!(xdel.lost_after(id(60, 0)), "an entry after it was deleted");
        assert!(!xdel.lost_after(id(70, 0)));
    }
}
