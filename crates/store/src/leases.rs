//! Leases: one holder per group at a time, for a TTL. The fencing token
//! grows whenever the holder changes, so a process that lost its lease
//! (paused, partitioned, slow) is refused by `check_lease` / `renew_lease`
//! before it acts on a group someone else now owns.

use crate::{Lease, Store, StoreError};
use repave_core::Timestamp;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::time::Duration;

/// The lease row: (holder, token, expires_at); holder is NULL once released.
type Row = (Option<String>, i64, i64);

fn read(conn: &rusqlite::Connection, group: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        "SELECT holder, token, expires_at FROM leases WHERE group_name = ?1",
        [group],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

impl Store {
    /// Take the lease on `group` for `holder` until `now + ttl`. Fails with
    /// [`StoreError::LeaseHeld`] while another holder's lease is unexpired.
    /// The same holder re-acquiring keeps its token; taking over an expired
    /// or released lease gets the next token.
    pub fn acquire_lease(&self, group: &str, holder: &str, ttl: Duration, now: Timestamp) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let err = |source| StoreError::AcquireLease {
            group: group.to_string(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let token = match read(&tx, group).map_err(err)? {
            Some((Some(current), token, _)) if current == holder => token,
            Some((Some(current), _, expires_at)) if expires_at > now.0 => {
                return Err(StoreError::LeaseHeld {
                    group: group.to_string(),
                    holder: current,
                    expires_at: Timestamp(expires_at),
                })
            }
            Some((_, token, _)) => token + 1,
            None => 1,
        };
        let expires_at = now.plus(ttl);
        tx.execute(
            "INSERT INTO leases (group_name, holder, token, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_name) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at",
            params![group, holder, token, expires_at.0],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Lease {
            group: group.to_string(),
            holder: holder.to_string(),
            token,
            expires_at,
        })
    }

    /// Extend a lease that is still current and unexpired to `now + ttl`;
    /// otherwise [`StoreError::LeaseLost`] (acquire again instead).
    pub fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Result<Lease, StoreError> {
        let expires_at = now.plus(ttl);
        let changed = self
            .conn()
            .execute(
                "UPDATE leases SET expires_at = ?4
                 WHERE group_name = ?1 AND holder = ?2 AND token = ?3 AND expires_at > ?5",
                params![lease.group, lease.holder, lease.token, expires_at.0, now.0],
            )
            .map_err(|source| StoreError::RenewLease {
                group: lease.group.clone(),
                source,
            })?;
        if changed == 0 {
            return Err(lost(lease));
        }
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    /// Give the lease up so another holder can take it at once. Releasing a
    /// lease that was already lost does nothing.
    pub fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE leases SET holder = NULL, expires_at = 0 WHERE group_name = ?1 AND holder = ?2 AND token = ?3",
                params![lease.group, lease.holder, lease.token],
            )
            .map_err(|source| StoreError::ReleaseLease {
                group: lease.group.clone(),
                source,
            })?;
        Ok(())
    }

    /// Fencing check before acting on the group: `Ok` only if `lease` is the
    /// current lease and unexpired at `now`, else [`StoreError::LeaseLost`].
    pub fn check_lease(&self, lease: &Lease, now: Timestamp) -> Result<(), StoreError> {
        let row = read(&self.conn(), &lease.group).map_err(|source| StoreError::ReadLease {
            group: lease.group.clone(),
            source,
        })?;
        match row {
            Some((Some(holder), token, expires_at))
                if holder == lease.holder && token == lease.token && expires_at > now.0 =>
            {
                Ok(())
            }
            _ => Err(lost(lease)),
        }
    }

    /// The lease on `group` unless released (it may have expired: compare
    /// `expires_at` with the current time).
    pub fn current_lease(&self, group: &str) -> Result<Option<Lease>, StoreError> {
        let row = read(&self.conn(), group).map_err(|source| StoreError::ReadLease {
            group: group.to_string(),
            source,
        })?;
        Ok(row.and_then(|(holder, token, expires_at)| {
            holder.map(|holder| Lease {
                group: group.to_string(),
                holder,
                token,
                expires_at: Timestamp(expires_at),
            })
        }))
    }
}

fn lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        group: lease.group.clone(),
        holder: lease.holder.clone(),
        token: lease.token,
    }
}
