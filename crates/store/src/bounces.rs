//! The bounce store: every inbound message is kept raw (committed before the
//! endpoint answers 250), then parsed by a worker. Parsing results are
//! stored next to the raw message, so `bounce reprocess` can redo them.

use crate::{Doing, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{BounceSource, BounceState};
use sea_orm::{ConnectionTrait, FromQueryResult, Value};
use uuid::Uuid;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewBounce<'a> {
    pub source: BounceSource,
    pub peer: Option<String>,
    pub mail_from: Option<String>,
    pub rcpt: Option<String>,
    /// The delivery named by a verified VERP token.
    pub delivery_id: Option<Uuid>,
    pub raw: &'a [u8],
}

/// One message received by the endpoint, with every recipient it was
/// accepted for: stored once ([`Store::insert_message`]).
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub peer: Option<String>,
    pub mail_from: Option<String>,
    /// Each distinct recipient, with the delivery its verified token names.
    pub recipients: Vec<(String, Option<Uuid>)>,
    /// What is kept of the message (the endpoint may cap it).
    pub raw: &'a [u8],
    /// The size received, which may be more than `raw`.
    pub size: u64,
    /// Mail to postmaster: kept for the operator, never parsed.
    pub postmaster: bool,
}

/// A stored message (without its raw bytes unless asked for).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredBounce {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub source: BounceSource,
    pub peer: Option<String>,
    pub mail_from: Option<String>,
    pub rcpt: Option<String>,
    pub delivery_id: Option<Uuid>,
    pub size: u64,
    pub state: BounceState,
    pub kind: Option<String>,
    pub class: Option<String>,
    pub parsed: Option<serde_json::Value>,
    pub error: Option<String>,
    /// When the message was applied to its subscriber (score, prune,
    /// unsubscribe): it counts once, also across `bounce reprocess`.
    pub acted_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[derive(FromQueryResult)]
struct Row {
    id: Uuid,
    received_at: DateTime<Utc>,
    source: String,
    peer: Option<String>,
    mail_from: Option<String>,
    rcpt: Option<String>,
    delivery_id: Option<Uuid>,
    size: i64,
    state: String,
    kind: Option<String>,
    class: Option<String>,
    parsed: Option<serde_json::Value>,
    error: Option<String>,
    acted_at: Option<DateTime<Utc>>,
    raw: Vec<u8>,
}

impl Row {
    fn into_bounce(self) -> Result<StoredBounce> {
        let parsed = match self.parsed {
            Some(serde_json::Value::String(text)) => Some(serde_json::from_str(&text).map_err(
                |e| StoreError::CorruptColumn {
                    column: "bounces.parsed",
                    problem: e.to_string(),
                },
            )?),
            other => other,
        };
        Ok(StoredBounce {
            id: self.id,
            received_at: self.received_at,
            source: self.source.parse()?,
            peer: self.peer,
            mail_from: self.mail_from,
            rcpt: self.rcpt,
            delivery_id: self.delivery_id,
            size: u64::try_from(self.size).unwrap_or(0),
            state: self.state.parse()?,
            kind: self.kind,
            class: self.class,
            parsed,
            error: self.error,
            acted_at: self.acted_at,
            raw: self.raw,
        })
    }
}

/// Which stored messages `bounce ls` wants, newest first.
#[derive(Debug, Clone, Default)]
pub struct BounceQuery {
    pub class: Option<String>,
    /// `dsn`, `arf`, …, or `postmaster`.
    pub kind: Option<String>,
    pub state: Option<BounceState>,
    pub since: Option<DateTime<Utc>>,
    pub limit: u64,
}

const COLUMNS: &str = "id, received_at, source, peer, mail_from, rcpt, delivery_id, size, state, kind, class, parsed, error, acted_at";

/// The raw bytes of a row: its own, or those of the row of the same message
/// that keeps them (`raw_from`: a message to several recipients is stored once).
const RAW: &str = "CASE WHEN raw_from IS NULL THEN raw \
     ELSE (SELECT r.raw FROM bounces r WHERE r.id = bounces.raw_from) END AS raw";

/// The `kind` of a message to `postmaster` (RFC 5321 §4.5.1): stored and
/// shown to the operator, never parsed as a bounce.
pub const POSTMASTER_KIND: &str = "postmaster";

impl Store {
    /// Stores a message and commits before returning: once this returns Ok,
    /// the message survives a crash, so the endpoint may answer 250.
    pub async fn insert_bounce(&self, b: &NewBounce<'_>) -> Result<Uuid> {
        let id = Uuid::now_v7();
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO bounces (id, received_at, source, peer, mail_from, rcpt, delivery_id, raw, size, state) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    id.into(),
                    Utc::now().into(),
                    b.source.as_str().into(),
                    b.peer.clone().into(),
                    b.mail_from.clone().into(),
                    b.rcpt.clone().into(),
                    b.delivery_id.into(),
                    b.raw.to_vec().into(),
                    (b.raw.len() as i64).into(),
                    BounceState::Pending.as_str().into(),
                ],
            ))
            .await
            .doing("storing an inbound message")?;
        Ok(id)
    }

    /// Stores one message for all its recipients in one transaction and
    /// commits before returning: one row per recipient, the bytes in the
    /// first only. Returns the rows' ids, in the order of `recipients`.
    ///
    /// # Errors
    /// The database failed; nothing is stored then.
    pub async fn insert_message(&self, m: &NewMessage<'_>) -> Result<Vec<Uuid>> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        let now = Utc::now();
        let (state, kind) = if m.postmaster {
            (BounceState::Parsed, Some(POSTMASTER_KIND))
        } else {
            (BounceState::Pending, None)
        };
        let mut ids = Vec::with_capacity(m.recipients.len());
        for (rcpt, delivery) in &m.recipients {
            let id = Uuid::now_v7();
            let first = ids.first().copied();
            let raw: Vec<u8> = if first.is_none() {
                m.raw.to_vec()
            } else {
                Vec::new()
            };
            txn.execute_raw(crate::stmt_for(
                backend,
                "INSERT INTO bounces (id, received_at, source, peer, mail_from, rcpt, delivery_id, raw, size, state, kind, raw_from) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    id.into(),
                    now.into(),
                    BounceSource::Smtp.as_str().into(),
                    m.peer.clone().into(),
                    m.mail_from.clone().into(),
                    rcpt.clone().into(),
                    (*delivery).into(),
                    raw.into(),
                    (m.size as i64).into(),
                    state.as_str().into(),
                    kind.map(str::to_string).into(),
                    first.into(),
                ],
            ))
            .await
            .doing("storing an inbound message")?;
            ids.push(id);
        }
        txn.commit().await.doing("committing an inbound message")?;
        Ok(ids)
    }

    /// Up to `limit` messages waiting to be parsed, oldest first, with their raw bytes.
    pub async fn pending_bounces(&self, limit: u64) -> Result<Vec<StoredBounce>> {
        let rows = Row::find_by_statement(self.stmt(
            &format!("SELECT {COLUMNS}, {RAW} FROM bounces WHERE state = ? ORDER BY received_at, id LIMIT ?"),
            vec![BounceState::Pending.as_str().into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await
        .doing("reading pending bounces")?;
        rows.into_iter().map(Row::into_bounce).collect()
    }

    /// Stores the parser's verdict for a message.
    pub async fn record_bounce_parse(
        &self,
        id: Uuid,
        kind: &str,
        class: &str,
        parsed: serde_json::Value,
    ) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE bounces SET state = ?, kind = ?, class = ?, parsed = ?, error = NULL, processed_at = ? WHERE id = ?",
                vec![
                    BounceState::Parsed.as_str().into(),
                    kind.into(),
                    class.into(),
                    parsed.into(),
                    Utc::now().into(),
                    id.into(),
                ],
            ))
            .await
            .doing("recording a parsed bounce")?;
        Ok(())
    }

    /// Records that the message was applied to its subscriber, so that
    /// parsing it again (`bounce reprocess`) does not count it again.
    pub async fn mark_bounce_acted(&self, id: Uuid) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE bounces SET acted_at = ? WHERE id = ?",
                vec![Utc::now().into(), id.into()],
            ))
            .await
            .doing("recording that a bounce was acted on")?;
        Ok(())
    }

    /// Records that parsing failed; the raw message stays for a later reprocess.
    pub async fn record_bounce_failure(&self, id: Uuid, error: &str) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE bounces SET state = ?, error = ?, processed_at = ? WHERE id = ?",
                vec![
                    BounceState::Failed.as_str().into(),
                    error.into(),
                    Utc::now().into(),
                    id.into(),
                ],
            ))
            .await
            .doing("recording a bounce parse failure")?;
        Ok(())
    }

    /// Puts stored messages (received since `since`, or all) back to
    /// `pending`, so the worker parses them again. Returns how many.
    pub async fn requeue_bounces(&self, since: Option<DateTime<Utc>>) -> Result<u64> {
        // Mail to postmaster is never parsed as a bounce.
        let (filter, mut values): (&str, Vec<Value>) = match since {
            Some(t) => (
                " WHERE (kind IS NULL OR kind <> ?) AND received_at >= ?",
                vec![POSTMASTER_KIND.into(), t.into()],
            ),
            None => (
                " WHERE (kind IS NULL OR kind <> ?)",
                vec![POSTMASTER_KIND.into()],
            ),
        };
        values.insert(0, BounceState::Pending.as_str().into());
        let r = self
            .db
            .execute_raw(self.stmt(&format!("UPDATE bounces SET state = ?{filter}"), values))
            .await
            .doing("requeueing bounces")?;
        Ok(r.rows_affected())
    }

    /// Stored messages, newest first, without raw bytes.
    pub async fn bounces(&self, q: &BounceQuery) -> Result<Vec<StoredBounce>> {
        let mut sql = format!("SELECT {COLUMNS}, x'' AS raw FROM bounces WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(c) = &q.class {
            sql.push_str(" AND class = ?");
            values.push(c.clone().into());
        }
        if let Some(k) = &q.kind {
            sql.push_str(" AND kind = ?");
            values.push(k.clone().into());
        }
        if let Some(s) = q.state {
            sql.push_str(" AND state = ?");
            values.push(s.as_str().into());
        }
        if let Some(t) = q.since {
            sql.push_str(" AND received_at >= ?");
            values.push(t.into());
        }
        sql.push_str(" ORDER BY received_at DESC, id DESC");
        if q.limit > 0 {
            sql.push_str(" LIMIT ?");
            values.push((q.limit as i64).into());
        }
        let sql = if self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            sql.replace("x'' AS raw", "'\\x'::bytea AS raw")
        } else {
            sql
        };
        let rows = Row::find_by_statement(self.stmt(&sql, values))
            .all(&self.db)
            .await
            .doing("listing bounces")?;
        rows.into_iter().map(Row::into_bounce).collect()
    }

    /// One stored message with its raw bytes.
    ///
    /// # Errors
    /// [`StoreError::BounceNotFound`].
    pub async fn bounce(&self, id: Uuid) -> Result<StoredBounce> {
        let row = Row::find_by_statement(self.stmt(
            &format!("SELECT {COLUMNS}, {RAW} FROM bounces WHERE id = ?"),
            vec![id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a bounce")?
        .ok_or(StoreError::BounceNotFound(id))?;
        row.into_bounce()
    }
}
