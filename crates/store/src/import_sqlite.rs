//! The SQLite side of the import: prepared statements on the raw `sqlite3`
//! handle (see the [`crate::import`] module doc for the whole path).
//!
//! All `unsafe` of the crate is in [`raw`] below: a borrowed connection
//! ([`raw::Db`], only reachable inside [`raw::with_db`] while sqlx's handle
//! lock is held), statements that finalize themselves on drop, and a bind /
//! step / reset call that binds every parameter of the statement from values
//! that live for the whole call. `libsqlite3-sys` is the exact version sqlx
//! links (`links = "sqlite3"` allows only one): upgrading sqlx means
//! upgrading it in the workspace `Cargo.toml` too.

use crate::import::{Batch, RESTORE_REASON, raw_error, reason_prefix, sqlx_error};
use crate::subscribers::RESET_BOUNCE_SCORE;
use crate::{BatchReport, Result, StoreError};
use chrono::SecondsFormat;
use raw::{Db, Val};
use rundbrief_core::{Actor, Attributes, AuditAction, MembershipStatus, SubscriberStatus};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{Sqlite, SqlitePool, Transaction};
use std::fmt::Write as _;
use uuid::Uuid;

pub(crate) struct SqliteImport {
    pool: SqlitePool,
    /// The one transaction of a dry run.
    dry: Option<Transaction<'static, Sqlite>>,
    /// Whether most addresses of the last batch were new. Then each row is
    /// inserted first (`ON CONFLICT (email_key) DO NOTHING`) and looked up
    /// only when the address exists, which saves an index search per new
    /// row; otherwise (re-runs, updates) it is looked up first, which saves
    /// a failed insert per existing row. Both give the same result.
    mostly_new: bool,
}

impl SqliteImport {
    pub(crate) async fn begin(pool: &SqlitePool, dry_run: bool) -> Result<SqliteImport> {
        let dry = if dry_run {
            Some(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(sqlx_error("starting the dry run"))?,
            )
        } else {
            None
        };
        Ok(SqliteImport {
            pool: pool.clone(),
            dry,
            mostly_new: true,
        })
    }

    pub(crate) async fn write(&mut self, batch: Batch<'_>) -> Result<BatchReport> {
        let mostly_new = self.mostly_new;
        let report = match &mut self.dry {
            // Inside the dry run's transaction (foreign keys checked as usual).
            Some(txn) => {
                let mut handle = txn
                    .lock_handle()
                    .await
                    .map_err(sqlx_error("locking the SQLite connection"))?;
                raw::with_db(&mut handle, |db| write_rows(db, &batch, mostly_new))?
            }
            None => {
                let mut conn: PoolConnection<Sqlite> = self
                    .pool
                    .acquire()
                    .await
                    .map_err(sqlx_error("starting a batch"))?;
                let mut handle = conn
                    .lock_handle()
                    .await
                    .map_err(sqlx_error("locking the SQLite connection"))?;
                // Begin, write and commit without giving the handle back: no
                // await in between, so the transaction cannot be left open.
                raw::with_db(&mut handle, |db| {
                    let txn = BatchTxn::begin(db, batch.list_id, batch.list_name)?;
                    let report = write_rows(db, &batch, mostly_new)?;
                    txn.commit()?;
                    Ok::<_, StoreError>(report)
                })?
            }
        };
        self.mostly_new = report.imported * 2 >= batch.rows.len() as u64;
        Ok(report)
    }

    #[cfg(test)]
    pub(crate) fn set_mostly_new(&mut self, mostly_new: bool) {
        self.mostly_new = mostly_new;
    }

    pub(crate) async fn finish(self) -> Result<()> {
        if let Some(txn) = self.dry {
            txn.rollback()
                .await
                .map_err(sqlx_error("rolling back the dry run"))?;
        }
        Ok(())
    }
}

/// One batch's transaction on the raw connection: `BEGIN IMMEDIATE` …
/// `COMMIT`, rolled back on drop unless committed.
///
/// Foreign keys are switched off for it (and back on when it ends, also on
/// errors and panics): SQLite would otherwise search `subscribers` and
/// `lists` for every membership row. They hold by construction instead: the
/// subscriber ids come from this transaction's own inserts and lookups, and
/// the list is checked once at the start; the write lock keeps everyone
/// else out until the commit.
struct BatchTxn<'a, 'h> {
    db: &'a Db<'h>,
    restore_foreign_keys: bool,
}

impl<'a, 'h> BatchTxn<'a, 'h> {
    fn begin(db: &'a Db<'h>, list_id: Uuid, list_name: &str) -> Result<Self> {
        let foreign_keys = {
            let mut q = db.prepare("PRAGMA foreign_keys")?;
            q.query_row(&[], |r| Ok(r.int(0) != 0))?.unwrap_or(false)
        };
        // The pragma is a no-op inside a transaction: set it before BEGIN.
        if foreign_keys {
            db.exec(c"PRAGMA foreign_keys = OFF")?;
        }
        let txn = BatchTxn {
            db,
            restore_foreign_keys: foreign_keys,
        };
        db.exec(c"BEGIN IMMEDIATE")?;
        let mut list = db.prepare("SELECT 1 FROM lists WHERE id = ?1")?;
        if list
            .query_row(&[Val::Blob(list_id.as_bytes())], |_| Ok(()))?
            .is_none()
        {
            return Err(StoreError::ListNotFound(list_name.to_string()));
        }
        Ok(txn)
    }

    fn commit(self) -> Result<()> {
        self.db.exec(c"COMMIT")
    }
}

impl Drop for BatchTxn<'_, '_> {
    fn drop(&mut self) {
        if self.db.in_transaction() {
            let _ = self.db.exec(c"ROLLBACK");
        }
        if self.restore_foreign_keys {
            let _ = self.db.exec(c"PRAGMA foreign_keys = ON");
        }
    }
}

const LOOKUP: &str = "SELECT s.id, s.name, s.attributes, s.status, m.status \
    FROM subscribers s LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = ?2 \
    WHERE s.email_key = ?1";
/// Inserts a new subscriber; does nothing (0 changes) when the address exists.
const INSERT_SUBSCRIBER: &str = "INSERT INTO subscribers \
    (id, email, email_key, name, attributes, status, created_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (email_key) DO NOTHING";
const UPDATE_SUBSCRIBER: &str =
    "UPDATE subscribers SET name = ?2, attributes = ?3, status = ?4, updated_at = ?5 WHERE id = ?1";
const UPSERT_MEMBERSHIP: &str = "INSERT INTO memberships \
    (subscriber_id, list_id, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at";
const INSERT_AUDIT: &str = "INSERT INTO audit \
    (id, subscriber_id, list_id, action, actor, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// An existing subscriber as the lookup returns it.
struct Existing {
    id: Uuid,
    name: Option<String>,
    attributes: Attributes,
    status: SubscriberStatus,
    membership: Option<MembershipStatus>,
}

fn write_rows(db: &Db<'_>, batch: &Batch<'_>, insert_first: bool) -> Result<BatchReport> {
    let mut lookup = db.prepare(LOOKUP)?;
    let mut insert_sub = db.prepare(INSERT_SUBSCRIBER)?;
    let mut update_sub = db.prepare(UPDATE_SUBSCRIBER)?;
    let mut upsert_member = db.prepare(UPSERT_MEMBERSHIP)?;
    let mut insert_audit = db.prepare(INSERT_AUDIT)?;

    // The text sqlx writes for a `DateTime<Utc>`, so that these rows compare
    // and parse like every other timestamp in the database.
    let now = batch.now.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let list = batch.list_id.into_bytes();
    let active = SubscriberStatus::Active.as_str();
    let subscribed = MembershipStatus::Subscribed.as_str();
    let actor = Actor::Import.as_str();
    let import_prefix = reason_prefix("import", &batch.opts.source);
    let restore_prefix = reason_prefix(RESTORE_REASON, &batch.opts.source);
    let mut reason = String::new();
    let mut json = Vec::new();
    let mut audit = |subscriber: &[u8; 16],
                     list: Option<&[u8; 16]>,
                     action: AuditAction,
                     prefix: &str,
                     line: u64|
     -> Result<()> {
        reason.clear();
        reason.push_str(prefix);
        let _ = write!(reason, "{line}");
        insert_audit.execute(&[
            Val::Blob(&Uuid::now_v7().into_bytes()),
            Val::Blob(subscriber),
            list.map_or(Val::Null, |l| Val::Blob(l)),
            Val::Text(action.as_str()),
            Val::Text(actor),
            Val::Text(&reason),
            Val::Text(&now),
        ])
    };
    let mut find = |key: &str| {
        lookup.query_row(&[Val::Text(key), Val::Blob(&list)], |r| {
            let id = r
                .blob(0)
                .and_then(|b| Uuid::from_slice(b).ok())
                .ok_or_else(|| StoreError::CorruptColumn {
                    column: "subscribers.id",
                    problem: "not a 16-byte UUID".into(),
                })?;
            let attributes = match r.text(2)? {
                None => Attributes::new(),
                Some(text) => {
                    serde_json::from_str(text).map_err(|e| StoreError::CorruptColumn {
                        column: "subscribers.attributes",
                        problem: e.to_string(),
                    })?
                }
            };
            Ok(Existing {
                id,
                name: r.text(1)?.map(str::to_string),
                attributes,
                status: r.text(3)?.unwrap_or_default().parse()?,
                membership: r.text(4)?.map(str::parse).transpose()?,
            })
        })
    };

    let mut report = BatchReport::default();
    for m in &batch.rows {
        let row = &m.row;
        let existing = if insert_first { None } else { find(&m.key)? };
        let existing = match existing {
            Some(e) => e,
            None => {
                let id = Uuid::now_v7().into_bytes();
                let attributes = attributes_json(&row.attributes, &mut json)?;
                insert_sub.execute(&[
                    Val::Blob(&id),
                    Val::Text(row.address.as_str()),
                    Val::Text(&m.key),
                    row.name.as_deref().map_or(Val::Null, Val::Text),
                    Val::Text(attributes),
                    Val::Text(active),
                    Val::Text(&now),
                ])?;
                if db.changes() == 0 {
                    // The address exists (only when inserting first).
                    match find(&m.key)? {
                        Some(e) if insert_first => e,
                        _ => {
                            return Err(raw_error(
                                "writing imported rows",
                                format!("subscriber `{}` neither inserted nor found", m.key),
                            ));
                        }
                    }
                } else {
                    upsert_member.execute(&[
                        Val::Blob(&id),
                        Val::Blob(&list),
                        Val::Text(subscribed),
                        Val::Text(&now),
                    ])?;
                    // The creation entry names the list: no separate `subscribed`.
                    audit(
                        &id,
                        Some(&list),
                        AuditAction::Created,
                        &import_prefix,
                        row.line,
                    )?;
                    report.imported += 1;
                    report.updated += m.occurrences - 1;
                    continue;
                }
            }
        };
        let restore =
            existing.status == SubscriberStatus::Bounced && batch.opts.resubscribe_bounced;
        let eligible = existing.status == SubscriberStatus::Active || restore;
        if !eligible || existing.membership == Some(MembershipStatus::Unsubscribed) {
            report.skipped += m.occurrences;
            continue;
        }
        let id = existing.id.into_bytes();
        let mut attributes = existing.attributes.clone();
        attributes.extend(row.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let name = row.name.as_ref().or(existing.name.as_ref());
        if restore || name != existing.name.as_ref() || attributes != existing.attributes {
            let attributes = attributes_json(&attributes, &mut json)?;
            update_sub.execute(&[
                Val::Blob(&id),
                name.map_or(Val::Null, |n| Val::Text(n)),
                Val::Text(attributes),
                Val::Text(active),
                Val::Text(&now),
            ])?;
        }
        if restore {
            // Back from `bounced`: the old bounces must not prune it again
            // (the same reset as `sub restore`); prepared here, as it is rare.
            db.prepare(RESET_BOUNCE_SCORE)?
                .execute(&[Val::Text(&now), Val::Blob(&id)])?;
            audit(&id, None, AuditAction::Restored, &restore_prefix, row.line)?;
        }
        if existing.membership != Some(MembershipStatus::Subscribed) {
            upsert_member.execute(&[
                Val::Blob(&id),
                Val::Blob(&list),
                Val::Text(subscribed),
                Val::Text(&now),
            ])?;
            audit(
                &id,
                Some(&list),
                AuditAction::Subscribed,
                &import_prefix,
                row.line,
            )?;
        }
        report.updated += m.occurrences;
    }
    Ok(report)
}

/// The attributes as the JSON object text the column holds, written into `buf`.
fn attributes_json<'b>(a: &Attributes, buf: &'b mut Vec<u8>) -> Result<&'b str> {
    let bad = |problem: String| StoreError::CorruptColumn {
        column: "import row attributes",
        problem,
    };
    buf.clear();
    serde_json::to_writer(&mut *buf, a).map_err(|e| bad(e.to_string()))?;
    std::str::from_utf8(buf).map_err(|e| bad(e.to_string()))
}

/// The only `unsafe` code of the import: a thin, checked wrapper over the
/// handful of SQLite C functions it needs.
mod raw {
    use super::{Result, raw_error};
    use crate::StoreError;
    use libsqlite3_sys as ffi;
    use sea_orm::sqlx::sqlite::LockedSqliteHandle;
    use std::ffi::{CStr, c_int};
    use std::marker::PhantomData;
    use std::ptr::{self, NonNull};

    /// The connection, borrowed from sqlx for as long as its handle lock is
    /// held: sqlx's worker thread makes no call on it meanwhile.
    pub struct Db<'h> {
        raw: NonNull<ffi::sqlite3>,
        _lock: PhantomData<&'h ()>,
    }

    /// Runs `f` with the raw connection of a locked sqlx handle. `Db` cannot
    /// escape `f`, so no statement outlives the lock.
    pub fn with_db<T>(
        handle: &mut LockedSqliteHandle<'_>,
        f: impl for<'h> FnOnce(&Db<'h>) -> T,
    ) -> T {
        let db = Db {
            raw: handle.as_raw_handle(),
            _lock: PhantomData,
        };
        f(&db)
    }

    impl Db<'_> {
        /// The connection's last error message.
        fn message(&self, rc: c_int) -> String {
            // SAFETY: the handle is valid (see `Db`); sqlite3_errmsg returns a
            // NUL-terminated string owned by SQLite, copied before any other call.
            let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.raw.as_ptr())) };
            format!("{} (SQLite error {rc})", msg.to_string_lossy())
        }

        /// Runs SQL without parameters or results (BEGIN, COMMIT, pragmas).
        pub fn exec(&self, sql: &'static CStr) -> Result<()> {
            let mut err = ptr::null_mut();
            // SAFETY: valid handle and NUL-terminated SQL; SQLite allocates
            // `err` on failure, freed below with sqlite3_free.
            let rc = unsafe {
                ffi::sqlite3_exec(
                    self.raw.as_ptr(),
                    sql.as_ptr(),
                    None,
                    ptr::null_mut(),
                    &mut err,
                )
            };
            if rc == ffi::SQLITE_OK {
                return Ok(());
            }
            let msg = self.message(rc);
            if !err.is_null() {
                // SAFETY: allocated by sqlite3_exec for us.
                unsafe { ffi::sqlite3_free(err.cast()) };
            }
            Err(raw_error("running an import transaction statement", msg))
        }

        /// Rows changed by the last INSERT, UPDATE or DELETE.
        pub fn changes(&self) -> i64 {
            // SAFETY: valid handle.
            unsafe { ffi::sqlite3_changes64(self.raw.as_ptr()) }
        }

        /// Whether a transaction is open.
        pub fn in_transaction(&self) -> bool {
            // SAFETY: valid handle.
            unsafe { ffi::sqlite3_get_autocommit(self.raw.as_ptr()) == 0 }
        }

        pub fn prepare(&self, sql: &'static str) -> Result<Stmt<'_>> {
            let mut stmt = ptr::null_mut();
            let len = c_int::try_from(sql.len()).map_err(|_| {
                raw_error("preparing an import statement", "statement too long".into())
            })?;
            // SAFETY: valid handle; `sql` is valid for `len` bytes; `stmt`
            // receives the new statement (or NULL on error).
            let rc = unsafe {
                ffi::sqlite3_prepare_v3(
                    self.raw.as_ptr(),
                    sql.as_ptr().cast(),
                    len,
                    ffi::SQLITE_PREPARE_PERSISTENT,
                    &mut stmt,
                    ptr::null_mut(),
                )
            };
            match NonNull::new(stmt) {
                Some(raw) if rc == ffi::SQLITE_OK => {
                    // SAFETY: `raw` is the statement just prepared.
                    let params = unsafe { ffi::sqlite3_bind_parameter_count(raw.as_ptr()) };
                    Ok(Stmt {
                        raw,
                        db: self,
                        params: params as usize,
                    })
                }
                other => {
                    let msg = self.message(rc);
                    if let Some(s) = other {
                        // SAFETY: a statement returned alongside an error is still ours to finalize.
                        unsafe { ffi::sqlite3_finalize(s.as_ptr()) };
                    }
                    Err(raw_error("preparing an import statement", msg))
                }
            }
        }
    }

    /// A bound value, borrowed for one [`Stmt::execute`] / [`Stmt::query_row`] call.
    #[derive(Clone, Copy)]
    pub enum Val<'a> {
        Null,
        Text(&'a str),
        Blob(&'a [u8]),
    }

    /// A prepared statement; finalized on drop.
    pub struct Stmt<'db> {
        raw: NonNull<ffi::sqlite3_stmt>,
        db: &'db Db<'db>,
        params: usize,
    }

    impl Drop for Stmt<'_> {
        fn drop(&mut self) {
            // SAFETY: the statement is ours and is not used after this.
            unsafe { ffi::sqlite3_finalize(self.raw.as_ptr()) };
        }
    }

    /// The current result row of a [`Stmt::query_row`].
    pub struct Row<'s> {
        raw: NonNull<ffi::sqlite3_stmt>,
        _stmt: PhantomData<&'s mut ()>,
    }

    impl Row<'_> {
        /// A text column; `None` for NULL.
        pub fn text(&self, i: c_int) -> Result<Option<&str>> {
            // SAFETY: the statement is on a row (SQLITE_ROW) and `i` is one of
            // its columns; sqlite3_column_text is called before
            // sqlite3_column_bytes as SQLite recommends, and the bytes stay
            // valid until the statement steps or resets, which `Row`'s
            // borrow prevents.
            unsafe {
                if ffi::sqlite3_column_type(self.raw.as_ptr(), i) == ffi::SQLITE_NULL {
                    return Ok(None);
                }
                let p = ffi::sqlite3_column_text(self.raw.as_ptr(), i);
                let n = ffi::sqlite3_column_bytes(self.raw.as_ptr(), i);
                if p.is_null() {
                    return Ok(Some(""));
                }
                let bytes = std::slice::from_raw_parts(p, n as usize);
                std::str::from_utf8(bytes)
                    .map(Some)
                    .map_err(|e| StoreError::CorruptColumn {
                        column: "import lookup",
                        problem: e.to_string(),
                    })
            }
        }

        /// An integer column (0 for NULL).
        pub fn int(&self, i: c_int) -> i64 {
            // SAFETY: as in `text`.
            unsafe { ffi::sqlite3_column_int64(self.raw.as_ptr(), i) }
        }

        /// A blob column; `None` for NULL.
        pub fn blob(&self, i: c_int) -> Option<&[u8]> {
            // SAFETY: as in `text`.
            unsafe {
                if ffi::sqlite3_column_type(self.raw.as_ptr(), i) == ffi::SQLITE_NULL {
                    return None;
                }
                let p = ffi::sqlite3_column_blob(self.raw.as_ptr(), i);
                let n = ffi::sqlite3_column_bytes(self.raw.as_ptr(), i);
                if p.is_null() {
                    return Some(&[]);
                }
                Some(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
            }
        }
    }

    impl Stmt<'_> {
        /// Binds every parameter (`vals` must name them all, in order). The
        /// values are bound without copying (SQLITE_STATIC): the caller
        /// resets and clears the bindings before they go out of scope.
        fn bind(&mut self, vals: &[Val<'_>]) -> Result<()> {
            if vals.len() != self.params {
                return Err(raw_error(
                    "binding an import statement",
                    format!("{} values for {} parameters", vals.len(), self.params),
                ));
            }
            for (i, v) in vals.iter().enumerate() {
                let i = i as c_int + 1;
                let too_long = || raw_error("binding an import statement", "value too long".into());
                // SAFETY: `i` is a parameter index of this statement; text and
                // blob pointers are valid for their length until `finish`
                // clears the bindings, before this call's borrows end.
                let rc = unsafe {
                    match *v {
                        Val::Null => ffi::sqlite3_bind_null(self.raw.as_ptr(), i),
                        Val::Text(t) => ffi::sqlite3_bind_text(
                            self.raw.as_ptr(),
                            i,
                            t.as_ptr().cast(),
                            c_int::try_from(t.len()).map_err(|_| too_long())?,
                            ffi::SQLITE_STATIC(),
                        ),
                        Val::Blob(b) => ffi::sqlite3_bind_blob(
                            self.raw.as_ptr(),
                            i,
                            b.as_ptr().cast(),
                            c_int::try_from(b.len()).map_err(|_| too_long())?,
                            ffi::SQLITE_STATIC(),
                        ),
                    }
                };
                if rc != ffi::SQLITE_OK {
                    let msg = self.db.message(rc);
                    self.finish();
                    return Err(raw_error("binding an import statement", msg));
                }
            }
            Ok(())
        }

        /// Resets the statement and drops its bindings (so that no borrowed
        /// pointer stays behind).
        fn finish(&mut self) {
            // SAFETY: the statement is ours; reset's return value repeats the
            // step's error, which the caller has already taken.
            unsafe {
                ffi::sqlite3_reset(self.raw.as_ptr());
                ffi::sqlite3_clear_bindings(self.raw.as_ptr());
            }
        }

        fn step(&mut self) -> c_int {
            // SAFETY: the statement is ours and fully bound.
            unsafe { ffi::sqlite3_step(self.raw.as_ptr()) }
        }

        /// Runs a statement that returns no rows.
        pub fn execute(&mut self, vals: &[Val<'_>]) -> Result<()> {
            self.bind(vals)?;
            let rc = self.step();
            let result = if rc == ffi::SQLITE_DONE {
                Ok(())
            } else {
                Err(raw_error("writing imported rows", self.db.message(rc)))
            };
            self.finish();
            result
        }

        /// Runs a query and maps its first row, if any.
        pub fn query_row<T>(
            &mut self,
            vals: &[Val<'_>],
            f: impl FnOnce(&Row<'_>) -> Result<T>,
        ) -> Result<Option<T>> {
            self.bind(vals)?;
            let rc = self.step();
            let result = match rc {
                ffi::SQLITE_ROW => f(&Row {
                    raw: self.raw,
                    _stmt: PhantomData,
                })
                .map(Some),
                ffi::SQLITE_DONE => Ok(None),
                _ => Err(raw_error(
                    "looking up existing subscribers",
                    self.db.message(rc),
                )),
            };
            self.finish();
            result
        }
    }
}
