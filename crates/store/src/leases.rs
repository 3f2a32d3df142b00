//! Leases: one holder per group at a time, for a TTL, held by one process
//! (its [`Driver`]). The fencing token grows whenever the holder or the
//! process changes, so a process that lost its lease (paused, partitioned,
//! slow, or replaced by a `resume` after it was presumed dead) is refused by
//! `check_lease` / `renew_lease` before it acts on a group someone else now
//! owns.

use crate::{Driver, Lease, Store, StoreError};
use repave_core::Timestamp;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::time::Duration;

/// The lease row: (holder, token, expires_at, driver); holder is NULL once
/// released.
type Row = (Option<String>, i64, i64, Option<Driver>);

fn read(conn: &rusqlite::Connection, group: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        "SELECT holder, token, expires_at, driver FROM leases WHERE group_name = ?1",
        [group],
        |r| {
            let driver: Option<String> = r.get(3)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                driver.and_then(|d| serde_json::from_str(&d).ok()),
            ))
        },
    )
    .optional()
}

impl Store {
    /// Take the lease on `group` for `holder`, held by this process, until
    /// `now + ttl` (see [`Store::acquire_lease_by`]).
    pub fn acquire_lease(&self, group: &str, holder: &str, ttl: Duration, now: Timestamp) -> Result<Lease, StoreError> {
        self.acquire_lease_by(group, holder, &Driver::current(), ttl, now)
    }

    /// Take the lease on `group` for `holder`, held by process `driver`,
    /// until `now + ttl`. Fails with [`StoreError::LeaseHeld`] while the
    /// lease is unexpired and held — by another holder, or by the same
    /// holder from another process — by a process that is alive (or whose
    /// liveness cannot be seen: another host). The same process re-acquiring
    /// keeps its token; anything else taking over gets the next token.
    pub fn acquire_lease_by(
        &self,
        group: &str,
        holder: &str,
        driver: &Driver,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let err = |source| StoreError::AcquireLease {
            group: group.to_string(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let held = |current: String, expires_at: i64, by: Option<Driver>| StoreError::LeaseHeld {
            group: group.to_string(),
            holder: current,
            expires_at: Timestamp(expires_at),
            driver: by,
        };
        let token = match read(&tx, group).map_err(err)? {
            Some((Some(current), token, expires_at, by)) if current == holder => match by {
                None => token,
                Some(by) if &by == driver => token,
                Some(by) if expires_at > now.0 && by.alive() != Some(false) => {
                    return Err(held(current, expires_at, Some(by)))
                }
                Some(_) => token + 1,
            },
            // Another run's lease, unexpired, held by a process that may
            // be alive: wait. (One whose process is gone holds nothing; the
            // engine refuses a new run while that run is unfinished.)
            Some((Some(current), _, expires_at, by))
                if expires_at > now.0 && by.as_ref().is_none_or(|d| d.alive() != Some(false)) =>
            {
                return Err(held(current, expires_at, by))
            }
            Some((_, token, _, _)) => token + 1,
            None => 1,
        };
        let expires_at = now.plus(ttl);
        let driver_json = serde_json::to_string(driver).expect("driver serializes");
        tx.execute(
            "INSERT INTO leases (group_name, holder, token, expires_at, driver) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (group_name) DO UPDATE SET holder = excluded.holder, token = excluded.token,
                 expires_at = excluded.expires_at, driver = excluded.driver",
            params![group, holder, token, expires_at.0, driver_json],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Lease {
            group: group.to_string(),
            holder: holder.to_string(),
            token,
            expires_at,
            driver: Some(driver.clone()),
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
            Some((Some(holder), token, expires_at, _))
                if holder == lease.holder && token == lease.token && expires_at > now.0 =>
            {
                Ok(())
            }
            _ => Err(lost(lease)),
        }
    }

    /// The process driving `run` on `group` now: the run holds the group's
    /// unexpired lease, and its driver is alive (or on another host, where
    /// only the expiry tells). `None`: nobody drives it.
    pub fn run_driver(&self, group: &str, run: &str, now: Timestamp) -> Result<Option<Driver>, StoreError> {
        Ok(self
            .current_lease(group)?
            .filter(|l| l.holder == run && l.expires_at > now)
            .and_then(|l| l.driver)
            .filter(|d| d.alive() != Some(false)))
    }

    /// The lease on `group` unless released (it may have expired: compare
    /// `expires_at` with the current time).
    pub fn current_lease(&self, group: &str) -> Result<Option<Lease>, StoreError> {
        let row = read(&self.conn(), group).map_err(|source| StoreError::ReadLease {
            group: group.to_string(),
            source,
        })?;
        Ok(row.and_then(|(holder, token, expires_at, driver)| {
            holder.map(|holder| Lease {
                group: group.to_string(),
                holder,
                token,
                expires_at: Timestamp(expires_at),
                driver,
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
