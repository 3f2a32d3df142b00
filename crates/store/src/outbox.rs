//! The webhook outbox: a notice is written here before anything is sent, so
//! one queued just before a shutdown (or a crash) is delivered after the
//! next start. Delivery is at least once: a notice whose POST was in flight
//! when the process died is sent again.

use crate::{Store, StoreError};
use repave_core::Timestamp;
use rusqlite::{params, Row};

/// Where a notice is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeState {
    Pending,
    Delivered,
    Failed,
}

impl NoticeState {
    fn parse(s: &str) -> NoticeState {
        match s {
            "delivered" => NoticeState::Delivered,
            "failed" => NoticeState::Failed,
            _ => NoticeState::Pending,
        }
    }
}

/// One notice for one hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    pub id: i64,
    /// A digest of the hook's URL (URLs of chat webhooks are secrets).
    pub hook: String,
    pub event: String,
    pub run: Option<String>,
    pub body: String,
    pub state: NoticeState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending notices).
    pub next_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

const COLUMNS: &str = "id, hook, event, run_id, body, state, attempts, next_at, last_error, created_at";

fn notice_from_row(r: &Row<'_>) -> rusqlite::Result<Notice> {
    Ok(Notice {
        id: r.get(0)?,
        hook: r.get(1)?,
        event: r.get(2)?,
        run: r.get(3)?,
        body: r.get(4)?,
        state: NoticeState::parse(&r.get::<_, String>(5)?),
        attempts: r.get(6)?,
        next_at: Timestamp(r.get(7)?),
        last_error: r.get(8)?,
        created_at: Timestamp(r.get(9)?),
    })
}

impl Store {
    /// Queue a notice for `hook`, due now. Returns its id.
    pub fn queue_notice(
        &self,
        hook: &str,
        event: &str,
        run: Option<&str>,
        body: &str,
        now: Timestamp,
    ) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                "INSERT INTO outbox (hook, event, run_id, body, state, attempts, next_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) RETURNING id",
                params![hook, event, run, body, now.0],
                |r| r.get(0),
            )
            .map_err(|source| StoreError::QueueNotice { source })
    }

    /// Pending notices due at `now`, oldest first, at most `limit`.
    pub fn due_notices(&self, now: Timestamp, limit: u32) -> Result<Vec<Notice>, StoreError> {
        self.select_notices(
            &format!("SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND next_at <= ?1 ORDER BY id LIMIT ?2"),
            params![now.0, limit],
        )
    }

    /// The newest `limit` notices in any state, newest first.
    pub fn notices(&self, limit: u32) -> Result<Vec<Notice>, StoreError> {
        self.select_notices(
            &format!("SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"),
            params![limit],
        )
    }

    fn select_notices(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Notice>, StoreError> {
        let conn = self.conn();
        let query = || -> rusqlite::Result<Vec<Notice>> {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(args, notice_from_row)?;
            rows.collect()
        };
        query().map_err(|source| StoreError::ReadOutbox { source })
    }

    /// One attempt at notice `id` ended: delivered, retried at `retry_at`,
    /// or (no `retry_at`) given up.
    pub fn record_attempt(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (state, next_at, ended_at) = match (error, retry_at) {
            (None, _) => ("delivered", now, Some(now.0)),
            (Some(_), Some(at)) => ("pending", at, None),
            (Some(_), None) => ("failed", now, Some(now.0)),
        };
        self.conn()
            .execute(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, next_at = ?3, last_error = ?4, ended_at = ?5
                 WHERE id = ?1 AND state = 'pending'",
                params![id, state, next_at.0, error, ended_at],
            )
            .map(|_| ())
            .map_err(|source| StoreError::RecordNotice { id, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_due_retried_and_ends_delivered_or_failed() {
        let store = Store::open_in_memory().unwrap();
        let pending = |store: &Store| store.due_notices(Timestamp(i64::MAX), 10).unwrap();
        assert!(pending(&store).is_empty());
        let a = store
            .queue_notice("h1", "started", Some("r-1"), "{}", Timestamp(100))
            .unwrap();
        let b = store
            .queue_notice("h2", "failed", None, "{\"x\":1}", Timestamp(100))
            .unwrap();
        assert!(store.due_notices(Timestamp(99), 10).unwrap().is_empty());
        let due = store.due_notices(Timestamp(100), 10).unwrap();
        assert_eq!(due.iter().map(|n| n.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(due[0].run.as_deref(), Some("r-1"));

        store
            .record_attempt(a, Some("status 500"), Some(Timestamp(350)), Timestamp(100))
            .unwrap();
        store.record_attempt(b, Some("refused"), None, Timestamp(100)).unwrap();
        let later: Vec<_> = pending(&store).iter().map(|n| (n.id, n.next_at)).collect();
        assert_eq!(later, vec![(a, Timestamp(350))], "b gave up; a is due again at 350");
        assert!(store.due_notices(Timestamp(349), 10).unwrap().is_empty());
        store.record_attempt(a, None, None, Timestamp(400)).unwrap();
        // A late second report on a finished notice changes nothing.
        store
            .record_attempt(a, Some("late"), Some(Timestamp(900)), Timestamp(401))
            .unwrap();

        let all = store.notices(10).unwrap();
        let by_id = |id| all.iter().find(|n| n.id == id).unwrap();
        assert_eq!((by_id(a).state, by_id(a).attempts), (NoticeState::Delivered, 2));
        assert_eq!(by_id(a).last_error, None);
        assert_eq!((by_id(b).state, by_id(b).attempts), (NoticeState::Failed, 1));
        assert_eq!(by_id(b).last_error.as_deref(), Some("refused"));
        assert!(pending(&store).is_empty());
    }
}
