//! Compact, versioned summaries of a table's commit infos, so that nobody replays a whole log.
//!
//! A [`Fold`] turns commit infos into a small state (for the rollup tables: hour → the recompute
//! that last wrote it). [`Folded::advance`] applies the commits after the state's version; a
//! summary object `_strata/summaries/<table>/<version, 20 digits>.json` stores the state as of
//! that version, written with a create-only put (two writers of the same version write the same
//! thing). Reading the newest summary and the commits after it costs what the state holds plus
//! what changed since — not the table's history, and not the log files that delta-rs expires
//! after a checkpoint.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::log::{Commit, CommitLog};

/// Summaries kept per table (older ones are deleted after a new one is written).
const KEEP: usize = 3;
const PREFIX: &str = "_strata/summaries";

/// What a summary could not do.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The lake could not be opened (its configuration, or the local folder).
    #[error("lake: {0}")]
    Open(#[from] strata_shared::Error),
    /// The lake's object store failed.
    #[error("lake: {0}")]
    Store(#[from] object_store::Error),
    /// A summary object is not what this version of Strata writes.
    #[error("summary {path}: {source}")]
    Corrupt {
        /// The object.
        path: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// A state folded from a table's commit infos.
pub trait Fold: Default + Clone + Serialize + DeserializeOwned + Send + Sync {
    /// Applies one commit, in version order.
    fn apply(&mut self, commit: &Commit);
}

/// A state and the table version it reflects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Folded<S> {
    /// The newest commit applied (`None`: none yet).
    pub version: Option<i64>,
    /// The folded state.
    pub state: S,
}

/// Where a table's summaries are kept.
#[derive(Clone)]
pub struct Summaries {
    store: Arc<dyn ObjectStore>,
    table: String,
    log: CommitLog,
}

impl Summaries {
    /// The summaries of `table` in the lake rooted at `store`.
    pub fn new(store: Arc<dyn ObjectStore>, table: &str) -> Self {
        Self {
            log: CommitLog::new(store.clone(), table),
            store,
            table: table.to_owned(),
        }
    }

    fn dir(&self) -> Path {
        Path::from(format!("{PREFIX}/{}", self.table))
    }

    fn path(&self, version: i64) -> Path {
        Path::from(format!("{PREFIX}/{}/{version:020}.json", self.table))
    }

    /// Stored summaries: (version, when written), oldest first.
    async fn stored(&self) -> Result<Vec<(i64, chrono::DateTime<chrono::Utc>)>, SummaryError> {
        let metas: Vec<_> = self.store.list(Some(&self.dir())).try_collect().await?;
        let mut v: Vec<(i64, chrono::DateTime<chrono::Utc>)> = metas
            .iter()
            .filter_map(|m| {
                let v = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
                Some((v, m.last_modified))
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    async fn stored_versions(&self) -> Result<Vec<i64>, SummaryError> {
        Ok(self.stored().await?.into_iter().map(|(v, _)| v).collect())
    }

    /// How long ago the newest summary was written (`None`: there is none).
    pub async fn newest_age(&self) -> Result<Option<std::time::Duration>, SummaryError> {
        Ok(self
            .stored()
            .await?
            .last()
            .map(|(_, at)| (chrono::Utc::now() - *at).to_std().unwrap_or_default()))
    }

    /// The newest stored summary (an empty state when there is none).
    pub async fn newest<S: Fold>(&self) -> Result<Folded<S>, SummaryError> {
        // A summary deleted between listing and reading was replaced by a newer one: list again.
        for _ in 0..3 {
            let Some(&v) = self.stored_versions().await?.last() else {
                return Ok(Folded::default());
            };
            let path = self.path(v);
            match self.store.get(&path).await {
                Ok(r) => {
                    let bytes = r.bytes().await?;
                    return serde_json::from_slice(&bytes).map_err(|source| {
                        SummaryError::Corrupt {
                            path: path.to_string(),
                            source,
                        }
                    });
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Folded::default())
    }

    /// The newest summary advanced to the newest commit.
    pub async fn read<S: Fold>(&self) -> Result<Folded<S>, SummaryError> {
        let mut f = self.newest().await?;
        self.advance(&mut f).await?;
        Ok(f)
    }

    /// Applies the commits after `f.version`; returns how many. A gap (the log after the
    /// state's version was expired before a summary was written) is logged: what those commits
    /// said is lost, the state continues from the oldest commit still there.
    pub async fn advance<S: Fold>(&self, f: &mut Folded<S>) -> Result<usize, SummaryError> {
        let versions = self.log.versions_after(f.version).await?;
        let expected = f.version.map_or(0, |v| v + 1);
        if versions.first().is_some_and(|&first| first > expected) {
            tracing::warn!(
                table = %self.table,
                from = expected,
                to = versions[0] - 1,
                "commits expired before they were summarised; what they recorded is not known"
            );
        }
        let commits = self.log.commits(&versions).await?;
        for c in &commits {
            f.state.apply(c);
            f.version = Some(c.version);
        }
        Ok(commits.len())
    }

    /// Stores `f` as the summary of its version (if it has one) and deletes all but the newest
    /// few. Best-effort for callers: a failure loses nothing, readers replay a little more log.
    pub async fn store<S: Fold>(&self, f: &Folded<S>) -> Result<(), SummaryError> {
        let Some(version) = f.version else {
            return Ok(());
        };
        let body = serde_json::to_vec(f).expect("a summary serialises");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(version), PutPayload::from(body), opts)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let stored = self.stored_versions().await?;
        if stored.len() > KEEP {
            for v in &stored[..stored.len() - KEEP] {
                match self.store.delete(&self.path(*v)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// The newest stored summary's version.
    pub async fn newest_version(&self) -> Result<Option<i64>, SummaryError> {
        Ok(self.stored_versions().await?.last().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Counts commits per operation.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Ops(BTreeMap<String, u32>);

    impl Fold for Ops {
        fn apply(&mut self, c: &Commit) {
            let op = c.info.get("op").and_then(|v| v.as_str()).unwrap_or("?");
            *self.0.entry(op.to_owned()).or_default() += 1;
        }
    }

    async fn commit(store: &Arc<dyn ObjectStore>, v: i64, op: &str) {
        let body = format!("{{\"commitInfo\":{{\"op\":\"{op}\"}}}}\n");
        store
            .put(
                &Path::from(format!("t/_delta_log/{v:020}.json")),
                body.into(),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_summary_plus_the_newer_commits_is_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let s = Summaries::new(store.clone(), "t");
        assert_eq!(s.read::<Ops>().await.unwrap(), Folded::default());
        for v in 0..5 {
            commit(&store, v, if v % 2 == 0 { "write" } else { "merge" }).await;
        }
        let f: Folded<Ops> = s.read().await.unwrap();
        assert_eq!(f.version, Some(4));
        s.store(&f).await.unwrap();
        // The log before the summary expires; later commits are read on top of the summary.
        for v in 0..5 {
            store
                .delete(&Path::from(format!("t/_delta_log/{v:020}.json")))
                .await
                .unwrap();
        }
        commit(&store, 5, "write").await;
        let g: Folded<Ops> = s.read().await.unwrap();
        assert_eq!(g.version, Some(5));
        assert_eq!(g.state.0["write"], 4);
        assert_eq!(g.state.0["merge"], 2);
        // Only the newest few summaries are kept.
        for v in 6..12 {
            commit(&store, v, "write").await;
            let mut f = s.newest::<Ops>().await.unwrap();
            s.advance(&mut f).await.unwrap();
            s.store(&f).await.unwrap();
        }
        assert_eq!(s.stored_versions().await.unwrap(), vec![9, 10, 11]);
        assert_eq!(s.read::<Ops>().await.unwrap().state.0["write"], 10);
    }
}
