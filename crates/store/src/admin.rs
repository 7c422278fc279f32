//! The web dashboard's accounts and audit (`rundbrief admin`): admin users
//! with their password hashes, API keys by the hash of the key, and the
//! actions taken through the dashboard. Hashing happens in `rundbrief-admin`;
//! this module only stores what it is given.

use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

/// An API key as stored: its name, scope word and the hash it is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
}

/// One action taken through the dashboard or the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdminAction {
    pub at: DateTime<Utc>,
    /// The admin's name (`key:NAME` for an API key).
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl Store {
    /// Adds an admin user with an argon2 PHC hash. False when the name is
    /// taken (nothing changes).
    pub async fn create_admin_user(&self, name: &str, password_hash: &str) -> Result<bool> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "INSERT INTO admin_users (id, name, password_hash, created_at) \
                 SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM admin_users WHERE name = ?)",
                vec![
                    Uuid::now_v7().into(),
                    name.into(),
                    password_hash.into(),
                    Utc::now().into(),
                    name.into(),
                ],
            ))
            .await
            .doing("adding an admin user")?;
        Ok(r.rows_affected() == 1)
    }

    /// The stored password hash of admin `name`, if there is one.
    pub async fn admin_password_hash(&self, name: &str) -> Result<Option<String>> {
        #[derive(FromQueryResult)]
        struct R {
            password_hash: String,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT password_hash FROM admin_users WHERE name = ?",
            vec![name.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading an admin user")?
        .map(|r| r.password_hash))
    }

    /// Stores an API key by its hash. False when the name is taken.
    pub async fn create_admin_key(&self, name: &str, scope: &str, key_hash: &str) -> Result<bool> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "INSERT INTO admin_keys (id, name, scope, key_hash, created_at) \
                 SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM admin_keys WHERE name = ?)",
                vec![
                    Uuid::now_v7().into(),
                    name.into(),
                    scope.into(),
                    key_hash.into(),
                    Utc::now().into(),
                    name.into(),
                ],
            ))
            .await
            .doing("adding an API key")?;
        Ok(r.rows_affected() == 1)
    }

    /// The API key whose hash is `key_hash`.
    pub async fn admin_key(&self, key_hash: &str) -> Result<Option<AdminKey>> {
        #[derive(FromQueryResult)]
        struct R {
            name: String,
            scope: String,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT name, scope FROM admin_keys WHERE key_hash = ?",
            vec![key_hash.into()],
        ))
        .one(&self.db)
        .await
        .doing("looking up an API key")?
        .map(|r| AdminKey {
            name: r.name,
            scope: r.scope,
        }))
    }

    /// Writes one dashboard action to the admin audit.
    pub async fn record_admin_action(&self, a: &AdminAction) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO admin_audit (id, at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    Uuid::now_v7().into(),
                    a.at.into(),
                    a.actor.as_str().into(),
                    a.action.as_str().into(),
                    a.target.as_str().into(),
                    a.detail.as_str().into(),
                ],
            ))
            .await
            .doing("recording an admin action")?;
        Ok(())
    }

    /// The latest `limit` dashboard actions, newest first.
    pub async fn admin_actions(&self, limit: u64) -> Result<Vec<AdminAction>> {
        #[derive(FromQueryResult)]
        struct R {
            at: DateTime<Utc>,
            actor: String,
            action: String,
            target: String,
            detail: String,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT at, actor, action, target, detail FROM admin_audit ORDER BY at DESC, id DESC LIMIT ?",
            vec![(limit.min(i64::MAX as u64) as i64).into()],
        ))
        .all(&self.db)
        .await
        .doing("reading the admin audit")?
        .into_iter()
        .map(|r| AdminAction {
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
        })
        .collect())
    }
}
