//! The audit trail (ActionTrail events): an append-only, hash-chained table of events, the lookups
//! `LookupEvents` needs, and the chain verifier behind `ferry audit verify`. Format and guarantees:
//! `docs/audit-trail.md`; schema: `migrations/0003_audit.sql`.
//!
//! Invariants:
//! * Rows are only ever inserted, with `seq` = previous maximum + 1 (no gaps), never updated or deleted.
//! * `hash` of row `n` is [`audit_hash`] over (format marker, `prev_hash`, `seq`, `event_time`, `body`),
//!   and `prev_hash` of row `n` is the `hash` of row `n - 1` ([`AUDIT_GENESIS_HASH`] for row 1).
//! * `body` is the event's canonical JSON ([`canonical_json`]); every other column is derived from it
//!   ([`AuditIndex::of`]), so a lookup can trust the columns only as far as `verify` checked them.
//! * The `meta` row `audit_head` holds the newest (seq, hash) and is updated in the append's transaction.
//!   Appenders lock that row first, so appends take turns on SQLite and across server processes sharing
//!   one PostgreSQL database; the primary key on `seq` is the backstop that rejects a duplicate, and the
//!   append retries.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::FromRow;

use crate::group::Appended;
use crate::{Db, DbError, Result};

/// Format marker hashed into every record of chain version 1.
pub const AUDIT_CHAIN_V1: &str = "ferry-audit-v1";
/// `prev_hash` of the first record.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";
/// The `meta` key of the chain's head anchor.
pub const AUDIT_HEAD_KEY: &str = "audit_head";

/// Records read per query while verifying.
const VERIFY_BATCH: i64 = 1000;

/// `hash_n = hex(SHA-256("ferry-audit-v1" LF prev_hash LF seq LF event_time LF body))`, where `seq` and
/// `event_time` are decimal ASCII, `prev_hash` is 64 lower-case hex digits and `body` the canonical JSON
/// as UTF-8. The separators make the encoding unambiguous: no field but `body` (the last) may contain LF.
pub fn audit_hash(prev_hash: &str, seq: i64, event_time: i64, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(AUDIT_CHAIN_V1.as_bytes());
    h.update(b"\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event_time.to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Canonical JSON: no insignificant whitespace, object keys sorted by their UTF-8 bytes, strings escaped
/// as `serde_json` escapes them. Independent of `serde_json`'s map order (which a dependency's
/// `preserve_order` feature would change).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(k) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One stored audit event.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub chain_version: i64,
    /// The searchable columns, derived from `body` when the record was written.
    #[sqlx(flatten)]
    pub index: AuditIndex,
    /// The event's canonical JSON: the record itself.
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The searchable columns of an event, derived from its JSON.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditIndex {
    pub event_id: String,
    pub event_time: i64,
    pub event_name: String,
    pub service_name: String,
    pub event_type: String,
    pub event_rw: String,
    pub access_key_id: Option<String>,
    pub user_name: Option<String>,
    pub role_name: Option<String>,
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    pub resource_type: Option<String>,
    pub resource_name: Option<String>,
    pub request_id: String,
}

impl AuditIndex {
    /// The columns of an ActionTrail event object: `eventId`, `eventTime` (`YYYY-MM-DDThh:mm:ssZ`),
    /// `eventName`, `serviceName`, `eventType`, `eventRW`, `requestId` (all required strings) and the
    /// optional `userIdentity.accessKeyId`, `userIdentity.userName`, `sourceIpAddress`, `errorCode`,
    /// `resourceType`, `resourceName`; the role name is the `<role>` of `userIdentity.arn`
    /// (`acs:ram::<account>:assumed-role/<role>/<session>`) when `userIdentity.type` is `assumed-role`.
    ///
    /// Errors: a message naming the missing or malformed field.
    pub fn of(event: &Value) -> std::result::Result<AuditIndex, String> {
        let req = |name: &str| -> std::result::Result<String, String> {
            event
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("the event has no string field {name}"))
        };
        let opt = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let time_text = req("eventTime")?;
        let event_time = parse_event_time(&time_text)
            .ok_or_else(|| format!("eventTime {time_text:?} is not like 2024-01-01T00:00:00Z"))?;
        let identity = event.get("userIdentity");
        let role_name = identity
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("assumed-role"))
            .and_then(|i| i.get("arn").and_then(Value::as_str))
            .and_then(|arn| arn.split_once(":assumed-role/"))
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        Ok(AuditIndex {
            event_id: req("eventId")?,
            event_time,
            event_name: req("eventName")?,
            service_name: req("serviceName")?,
            event_type: req("eventType")?,
            event_rw: req("eventRW")?,
            access_key_id: opt(identity.and_then(|i| i.get("accessKeyId"))),
            user_name: opt(identity.and_then(|i| i.get("userName"))),
            role_name,
            source_ip: opt(event.get("sourceIpAddress")),
            error_code: opt(event.get("errorCode")),
            resource_type: opt(event.get("resourceType")),
            resource_name: opt(event.get("resourceName")),
            request_id: req("requestId")?,
        })
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` → unix seconds; `None` for any other shape.
fn parse_event_time(s: &str) -> Option<i64> {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(s, &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// A `LookupEvents` attribute (`LookupAttribute.N.Key`) and the column it filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKey {
    ServiceName,
    EventName,
    User,
    EventId,
    ResourceType,
    ResourceName,
    EventRw,
    EventAccessKeyId,
    SourceIpAddress,
    EventType,
    RoleName,
}

impl AuditKey {
    /// Every key, in the reference's order.
    pub const ALL: [AuditKey; 11] = [
        AuditKey::ServiceName,
        AuditKey::EventName,
        AuditKey::User,
        AuditKey::EventId,
        AuditKey::ResourceType,
        AuditKey::ResourceName,
        AuditKey::EventRw,
        AuditKey::EventAccessKeyId,
        AuditKey::SourceIpAddress,
        AuditKey::EventType,
        AuditKey::RoleName,
    ];

    /// The key as the API spells it.
    pub fn name(self) -> &'static str {
        match self {
            AuditKey::ServiceName => "ServiceName",
            AuditKey::EventName => "EventName",
            AuditKey::User => "User",
            AuditKey::EventId => "EventId",
            AuditKey::ResourceType => "ResourceType",
            AuditKey::ResourceName => "ResourceName",
            AuditKey::EventRw => "EventRW",
            AuditKey::EventAccessKeyId => "EventAccessKeyId",
            AuditKey::SourceIpAddress => "SourceIpAddress",
            AuditKey::EventType => "EventType",
            AuditKey::RoleName => "RoleName",
        }
    }

    /// The key named `name` (exact, case-sensitive, like ActionTrail).
    pub fn parse(name: &str) -> Option<AuditKey> {
        AuditKey::ALL.into_iter().find(|k| k.name() == name)
    }

    fn column(self) -> &'static str {
        match self {
            AuditKey::ServiceName => "service_name",
            AuditKey::EventName => "event_name",
            AuditKey::User => "user_name",
            AuditKey::EventId => "event_id",
            AuditKey::ResourceType => "resource_type",
            AuditKey::ResourceName => "resource_name",
            AuditKey::EventRw => "event_rw",
            AuditKey::EventAccessKeyId => "access_key_id",
            AuditKey::SourceIpAddress => "source_ip",
            AuditKey::EventType => "event_type",
            AuditKey::RoleName => "role_name",
        }
    }
}

/// Order of a lookup: oldest first or newest first (by `seq`, the order events were appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditDirection {
    Forward,
    Backward,
}

/// What `audit_lookup` selects: events with `start <= event_time <= end` whose columns equal every
/// attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub attributes: Vec<(AuditKey, String)>,
    pub start: i64,
    pub end: i64,
}

/// One page of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// When more records match: the cursor to pass as `after_seq` for the next page (the last record's
    /// `seq`).
    pub next_seq: Option<i64>,
}

/// A (seq, hash) the chain must contain: the head kept in `meta`, or a copy kept outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// Format version of the anchor (`docs/audit-trail.md`); 1 today.
    pub version: u32,
    pub seq: i64,
    pub hash: String,
}

impl AuditAnchor {
    pub fn new(seq: i64, hash: &str) -> AuditAnchor {
        AuditAnchor {
            version: 1,
            seq,
            hash: hash.to_owned(),
        }
    }
}

/// What kind of damage `verify` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditProblemKind {
    /// The record's hash is not the hash of its contents: it was changed.
    HashMismatch,
    /// The record's `prev_hash` is not the previous record's hash: a record before it was changed,
    /// inserted, removed or moved.
    PrevHashMismatch,
    /// Sequence numbers are missing: records were deleted.
    Gap,
    /// An index column disagrees with the body: a column was edited (lookups would be misled).
    ColumnMismatch,
    /// The body is not a valid event.
    BadBody,
    /// The record uses a chain version this build does not know.
    UnknownVersion,
    /// An anchor names a record the chain does not have: the tail was truncated (or the database
    /// restored from an older backup).
    Truncated,
    /// An anchor's hash differs from the chain's record at that seq: the chain was rewritten.
    AnchorMismatch,
    /// An anchor could not be read.
    BadAnchor,
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditProblem {
    /// The record concerned (for anchors: the anchored seq).
    pub seq: i64,
    pub kind: AuditProblemKind,
    pub detail: String,
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {:?}: {}", self.seq, self.kind, self.detail)
    }
}

/// The outcome of [`Db::audit_verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Records read.
    pub count: i64,
    /// The last record read (None for an empty chain).
    pub head: Option<AuditAnchor>,
    /// Every problem, in seq order of discovery; empty when the chain is intact.
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    if d.is_unique_violation() {
        return true;
    }
    // SQLite: SQLITE_BUSY (5) and its extended codes (e.g. 517, BUSY_SNAPSHOT: our read snapshot went
    // stale before our write). PostgreSQL: serialization failure, deadlock.
    match d.code().as_deref() {
        Some(code) => {
            matches!(code, "40001" | "40P01")
                || code
                    .parse::<i64>()
                    .is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6)
        }
        None => false,
    }
}

impl Db {
    /// Appends `event` (an ActionTrail event object) as the chain's next record and moves the head
    /// anchor in `meta` to it, in one transaction shared with the other appends and nonces queued at the
    /// same moment (group commit, `group.rs`). Safe to call concurrently, from several processes sharing
    /// one database: appenders take turns on the head row, and a lost race is retried.
    ///
    /// Errors: [`DbError::Corrupt`] when `event` lacks a field the index needs (a caller's bug; nothing
    /// is written); [`DbError::Sql`] when the database fails or stays busy.
    pub async fn audit_append(&self, event: &Value) -> Result<AuditRecord> {
        Ok(self.audit_append_anchored(event).await?.record)
    }

    /// [`Db::audit_append`], also returning the chain's head after the batch that wrote the record: the
    /// anchor to keep outside the database.
    pub async fn audit_append_anchored(&self, event: &Value) -> Result<Appended> {
        let ix = AuditIndex::of(event).map_err(|detail| DbError::Corrupt {
            what: "audit event to append (a bug in its producer)",
            detail,
        })?;
        self.writer.audit_append(ix, canonical_json(event)).await
    }

    /// Up to `max` events matching `q`, after the cursor `after_seq` (exclusive) in `direction`:
    /// `Forward` is oldest first (`seq` ascending), `Backward` newest first. Pages never overlap or skip a
    /// record: the cursor is a position in the append order, which never changes.
    pub async fn audit_lookup(
        &self,
        q: &AuditQuery,
        max: i64,
        after_seq: Option<i64>,
        direction: AuditDirection,
    ) -> Result<AuditPage> {
        let mut sql =
            String::from("SELECT * FROM audit_events WHERE event_time >= $1 AND event_time <= $2");
        let mut n = 2;
        for (key, _) in &q.attributes {
            n += 1;
            sql.push_str(&format!(" AND {} = ${n}", key.column()));
        }
        let (cmp, order) = match direction {
            AuditDirection::Forward => (">", "ASC"),
            AuditDirection::Backward => ("<", "DESC"),
        };
        if after_seq.is_some() {
            n += 1;
            sql.push_str(&format!(" AND seq {cmp} ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY seq {order} LIMIT ${n}"));
        let mut query = sqlx::query_as::<_, AuditRecord>(&sql)
            .bind(q.start)
            .bind(q.end);
        for (_, value) in &q.attributes {
            query = query.bind(value);
        }
        if let Some(s) = after_seq {
            query = query.bind(s);
        }
        let max = max.max(1);
        // One more than asked tells whether another page exists.
        let mut records = query.bind(max + 1).fetch_all(&self.read).await?;
        let more = records.len() as i64 > max;
        records.truncate(max as usize);
        let next_seq = more.then(|| records.last().map(|r| r.seq)).flatten();
        Ok(AuditPage { records, next_seq })
    }

    /// Up to `limit` records with `seq >= from_seq`, in `seq` order.
    pub async fn audit_scan(&self, from_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM audit_events WHERE seq >= $1 ORDER BY seq ASC LIMIT $2")
                .bind(from_seq)
                .bind(limit)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The head anchor kept in `meta`: `Ok(None)` while the chain is empty.
    ///
    /// Errors: [`DbError::Corrupt`] when the stored anchor is not valid JSON of an anchor.
    pub async fn audit_head(&self) -> Result<Option<AuditAnchor>> {
        match self.meta_get(AUDIT_HEAD_KEY).await? {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => serde_json::from_str(&v)
                .map(Some)
                .map_err(|e| DbError::Corrupt {
                    what: "audit head anchor in meta",
                    detail: format!("{e}: {v:?}"),
                }),
        }
    }

    /// Walks the whole chain and reports every problem: changed records (hash), inserted, removed or
    /// moved records (prev_hash, gaps), edited index columns, and anchors the chain does not contain
    /// (truncation, rewrite). `anchors` are extra anchors kept outside the database, with a name for
    /// messages (e.g. the anchor file's path); the head in `meta` is always checked. Anchors are read
    /// before the walk, so records appended meanwhile are not mistaken for damage.
    ///
    /// Errors: only database failures; damage is reported in the [`AuditReport`].
    pub async fn audit_verify(&self, anchors: &[(String, AuditAnchor)]) -> Result<AuditReport> {
        let mut problems = Vec::new();
        let mut all: Vec<(String, AuditAnchor)> = Vec::new();
        match self.meta_get(AUDIT_HEAD_KEY).await? {
            None => problems.push(AuditProblem {
                seq: 0,
                kind: AuditProblemKind::BadAnchor,
                detail: format!(
                    "the head anchor (meta key {AUDIT_HEAD_KEY}) is missing: it was deleted"
                ),
            }),
            Some(v) if v.is_empty() => {}
            Some(v) => match serde_json::from_str::<AuditAnchor>(&v) {
                Ok(a) => all.push((format!("the head anchor (meta key {AUDIT_HEAD_KEY})"), a)),
                Err(e) => problems.push(AuditProblem {
                    seq: 0,
                    kind: AuditProblemKind::BadAnchor,
                    detail: format!(
                        "the head anchor (meta key {AUDIT_HEAD_KEY}) is unreadable: {e}"
                    ),
                }),
            },
        }
        all.extend(anchors.iter().cloned());
        let wanted: HashMap<i64, Vec<usize>> =
            all.iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, (_, a))| {
                    m.entry(a.seq).or_default().push(i);
                    m
                });
        let mut found = vec![false; all.len()];

        let mut expected_seq = 1;
        let mut prev_hash = AUDIT_GENESIS_HASH.to_owned();
        let mut count = 0;
        let mut head = None;
        // The first batch starts below 1: a record slipped in with seq 0 or less must be seen too.
        let mut scan_from = i64::MIN;
        loop {
            let batch = self.audit_scan(scan_from, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break };
            scan_from = last.seq.saturating_add(1);
            for r in batch {
                count += 1;
                check_record(&r, expected_seq, &prev_hash, &mut problems);
                for &i in wanted.get(&r.seq).into_iter().flatten() {
                    found[i] = true;
                    let (name, a) = &all[i];
                    if a.hash != r.hash {
                        problems.push(AuditProblem {
                            seq: r.seq,
                            kind: AuditProblemKind::AnchorMismatch,
                            detail: format!(
                                "{name} records hash {} for this record, the chain has {}: the chain was \
                                 rewritten from here or earlier",
                                a.hash, r.hash
                            ),
                        });
                    }
                }
                prev_hash = r.hash.clone();
                expected_seq = r.seq.saturating_add(1);
                head = Some(AuditAnchor::new(r.seq, &r.hash));
            }
        }
        for (i, (name, a)) in all.iter().enumerate() {
            if !found[i] {
                let last = head.as_ref().map_or(0, |h| h.seq);
                problems.push(AuditProblem {
                    seq: a.seq,
                    kind: AuditProblemKind::Truncated,
                    detail: if a.seq > last {
                        format!(
                            "{name} names record {} but the chain ends at {last}: records {}..={} were \
                             removed from the end",
                            a.seq,
                            last + 1,
                            a.seq
                        )
                    } else {
                        format!("{name} names record {}, which is missing", a.seq)
                    },
                });
            }
        }
        Ok(AuditReport {
            count,
            head,
            problems,
        })
    }
}

/// Checks one record against its predecessor's position and hash.
fn check_record(
    r: &AuditRecord,
    expected_seq: i64,
    prev_hash: &str,
    problems: &mut Vec<AuditProblem>,
) {
    let mut problem = |kind, detail: String| {
        problems.push(AuditProblem {
            seq: r.seq,
            kind,
            detail,
        })
    };
    if r.seq < expected_seq {
        problem(
            AuditProblemKind::Gap,
            format!(
                "record number {} is out of sequence (expected {expected_seq}): it was inserted",
                r.seq
            ),
        );
    } else if r.seq > expected_seq {
        problem(
            AuditProblemKind::Gap,
            format!(
                "expected record {expected_seq} next, found {}: records {expected_seq}..={} were deleted",
                r.seq,
                r.seq - 1
            ),
        );
    }
    if r.prev_hash != prev_hash {
        problem(
            AuditProblemKind::PrevHashMismatch,
            format!(
                "prev_hash {} is not the hash {prev_hash} of the record before it: a record before this one \
                 was changed, inserted, deleted or moved",
                r.prev_hash
            ),
        );
    }
    if r.chain_version != 1 {
        problem(
            AuditProblemKind::UnknownVersion,
            format!(
                "chain version {} is unknown to this build: upgrade ferry",
                r.chain_version
            ),
        );
        return;
    }
    let computed = audit_hash(&r.prev_hash, r.seq, r.index.event_time, &r.body);
    if computed != r.hash {
        problem(
            AuditProblemKind::HashMismatch,
            format!(
                "the stored hash {} is not the hash of the record's contents ({computed}): the record was \
                 changed",
                r.hash
            ),
        );
    }
    let event: Value = match serde_json::from_str(&r.body) {
        Ok(v) => v,
        Err(e) => {
            problem(
                AuditProblemKind::BadBody,
                format!("the body is not JSON: {e}"),
            );
            return;
        }
    };
    if canonical_json(&event) != r.body {
        problem(
            AuditProblemKind::BadBody,
            "the body is not in canonical form: it was not written by ferry".to_owned(),
        );
    }
    match AuditIndex::of(&event) {
        Ok(ix) if ix == r.index => {}
        Ok(ix) => problem(
            AuditProblemKind::ColumnMismatch,
            format!(
                "the index columns disagree with the body (body says {ix:?}): a column was edited, and \
                 lookups by it are misled"
            ),
        ),
        Err(e) => problem(AuditProblemKind::BadBody, e),
    }
}

/// Inserts the record `seq` after `prev_hash` (the chain's current last record) in `tx`.
pub(crate) async fn insert_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    seq: i64,
    prev_hash: &str,
    ix: &AuditIndex,
    body: &str,
) -> Result<AuditRecord> {
    let hash = audit_hash(prev_hash, seq, ix.event_time, body);
    let r = AuditRecord {
        seq,
        chain_version: 1,
        index: ix.clone(),
        body: body.to_owned(),
        prev_hash: prev_hash.to_owned(),
        hash,
    };
    sqlx::query(
        "INSERT INTO audit_events (seq, chain_version, event_id, event_time, event_name, service_name, \
         event_type, event_rw, access_key_id, user_name, role_name, source_ip, error_code, resource_type, \
         resource_name, request_id, body, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(r.seq)
    .bind(r.chain_version)
    .bind(&r.index.event_id)
    .bind(r.index.event_time)
    .bind(&r.index.event_name)
    .bind(&r.index.service_name)
    .bind(&r.index.event_type)
    .bind(&r.index.event_rw)
    .bind(&r.index.access_key_id)
    .bind(&r.index.user_name)
    .bind(&r.index.role_name)
    .bind(&r.index.source_ip)
    .bind(&r.index.error_code)
    .bind(&r.index.resource_type)
    .bind(&r.index.resource_name)
    .bind(&r.index.request_id)
    .bind(&r.body)
    .bind(&r.prev_hash)
    .bind(&r.hash)
    .execute(&mut **tx)
    .await?;
    Ok(r)
}

/// Moves the head anchor in `meta` to `head`, in `tx`.
pub(crate) async fn store_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    head: &AuditAnchor,
) -> Result<()> {
    let value = serde_json::to_string(head).map_err(|e| DbError::Corrupt {
        what: "audit head anchor",
        detail: e.to_string(),
    })?;
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(AUDIT_HEAD_KEY)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_spaces() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x\"y"], "m": -2}, "é": "ü"});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"m":-2,"z":[true,null,"x\"y"]},"b":1,"é":"ü"}"#
        );
    }

    #[test]
    fn the_hash_covers_every_input() {
        let base = audit_hash(AUDIT_GENESIS_HASH, 1, 100, "{}");
        assert_eq!(base.len(), 64);
        assert_ne!(base, audit_hash(AUDIT_GENESIS_HASH, 2, 100, "{}"));
        assert_ne!(base, audit_hash(AUDIT_GENESIS_HASH, 1, 101, "{}"));
        assert_ne!(base, audit_hash(AUDIT_GENESIS_HASH, 1, 100, "{ }"));
        assert_ne!(base, audit_hash(&"1".repeat(64), 1, 100, "{}"));
        // Pinned: a change of the encoding is a new chain version, never a silent change.
        let mut h = Sha256::new();
        h.update(format!("ferry-audit-v1\n{AUDIT_GENESIS_HASH}\n1\n100\n{{}}").as_bytes());
        assert_eq!(base, hex::encode(h.finalize()));
    }

    #[test]
    fn the_index_comes_from_the_event() {
        let ev = json!({
            "eventId": "E-1", "eventTime": "2024-01-01T00:00:10Z", "eventName": "StartReplicationJob",
            "serviceName": "Smc", "eventType": "ApiCall", "eventRW": "Write", "requestId": "R-1",
            "userIdentity": {"type": "assumed-role", "accessKeyId": "STS.x", "userName": "ops",
                             "arn": "acs:ram::123:assumed-role/migrator/session-1"},
            "sourceIpAddress": "127.0.0.1", "resourceType": "ACS::SMC::ReplicationJob", "resourceName": "j-1"
        });
        let ix = AuditIndex::of(&ev).expect("valid event");
        assert_eq!(ix.event_time, 1_704_067_210);
        assert_eq!(ix.role_name.as_deref(), Some("migrator"));
        assert_eq!(ix.access_key_id.as_deref(), Some("STS.x"));
        assert_eq!(ix.error_code, None);
        let mut bad = ev.clone();
        bad["eventTime"] = json!("2024-01-01 00:00:10");
        assert!(
            AuditIndex::of(&bad)
                .expect_err("bad time")
                .contains("eventTime")
        );
        let mut bad = ev;
        bad.as_object_mut().map(|o| o.remove("eventId"));
        assert!(AuditIndex::of(&bad).expect_err("no id").contains("eventId"));
    }
}
