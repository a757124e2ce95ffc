//! Telling the other replicas that a source's runs changed (PostgreSQL `LISTEN`/`NOTIFY`).
//!
//! A heartbeat long-polls on the replica that received it (docs/scale-out.md). When a run of its source is
//! started or stopped through another replica, that replica announces the source on the channel
//! [`SOURCE_CHANGED_CHANNEL`]; every replica listens and wakes its own polls of that source, so the agent
//! hears of the run at once wherever the call landed. The payload is the source ID, nothing else.
//!
//! A notification is a hint, never the truth: a woken poll re-reads its source from the database, and a
//! lost one only delays the agent until its long poll ends (at most `--long-poll`). When the listening
//! connection drops, notifications sent meanwhile are lost; [`SourceChange::Missed`] says so, and the
//! server wakes every poll it holds. On SQLite (one server) there is nobody to tell.

use sqlx::postgres::PgListener;

use crate::{Db, Result};

/// The PostgreSQL channel of [`Db::announce_source_changed`]. Part of the replicas' shared contract: all
/// replicas of one deployment must use the same name.
pub const SOURCE_CHANGED_CHANNEL: &str = "ferry_source_changed";

/// What [`SourceChanges::next`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChange {
    /// The runs of this source changed.
    Source(String),
    /// The listening connection was lost and is back: announcements may have been missed.
    Missed,
}

/// A listening connection on [`SOURCE_CHANGED_CHANNEL`] ([`Db::listen_source_changes`]).
pub struct SourceChanges(PgListener);

impl SourceChanges {
    /// Waits for the next announcement. It reconnects by itself after a lost connection (and then says
    /// [`SourceChange::Missed`]); an error means it could not.
    pub async fn next(&mut self) -> Result<SourceChange> {
        Ok(match self.0.try_recv().await? {
            Some(n) => SourceChange::Source(n.payload().to_owned()),
            None => SourceChange::Missed,
        })
    }
}

impl Db {
    /// Tells every replica listening ([`Db::listen_source_changes`]) that `source_id`'s runs changed.
    /// Nothing to do on SQLite.
    pub async fn announce_source_changed(&self, source_id: &str) -> Result<()> {
        if self.postgres_url.is_none() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SOURCE_CHANGED_CHANNEL)
            .bind(source_id)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    /// Listens for [`Db::announce_source_changed`] on a connection of its own; `None` on SQLite.
    pub async fn listen_source_changes(&self) -> Result<Option<SourceChanges>> {
        let Some(url) = &self.postgres_url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url).await?;
        listener.listen(SOURCE_CHANGED_CHANNEL).await?;
        Ok(Some(SourceChanges(listener)))
    }
}
