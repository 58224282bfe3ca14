//! A Delta table's commit log read directly from the lake's object store: which commit versions
//! exist after a given one (their real numbers, from the file names) and the commit info of each.
//!
//! Positions in `DeltaTable::history` are not versions once delta-rs has written a checkpoint
//! and expired old log files (its defaults), so everything here is keyed by the file name
//! `_delta_log/<version, 20 digits>.json`.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Map, Value};

/// How many commit files are fetched at once.
const CONCURRENT_READS: usize = 16;

/// The commit log of one table of the lake.
#[derive(Clone)]
pub struct CommitLog {
    store: Arc<dyn ObjectStore>,
    table: String,
}

/// One commit: its version and its commit info (the `commitInfo` action, custom keys included).
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The table version this commit created.
    pub version: i64,
    /// The commit info (empty when the commit has none).
    pub info: Map<String, Value>,
}

impl CommitLog {
    /// The log of `table` in the lake rooted at `store`.
    pub fn new(store: Arc<dyn ObjectStore>, table: &str) -> Self {
        Self {
            store,
            table: table.to_owned(),
        }
    }

    fn dir(&self) -> Path {
        Path::from(format!("{}/_delta_log", self.table))
    }

    fn commit_path(&self, version: i64) -> Path {
        Path::from(format!("{}/_delta_log/{version:020}.json", self.table))
    }

    /// Versions of the commit files after `after` (all when `None`), ascending. Lists only
    /// names after `after` (S3 `start-after`), so the cost follows the new commits.
    pub async fn versions_after(
        &self,
        after: Option<i64>,
    ) -> Result<Vec<i64>, object_store::Error> {
        let dir = self.dir();
        let listing = match after {
            Some(v) => self
                .store
                .list_with_offset(Some(&dir), &self.commit_path(v)),
            None => self.store.list(Some(&dir)),
        };
        let metas: Vec<_> = listing.try_collect().await?;
        let mut versions: Vec<i64> = metas
            .iter()
            .filter_map(|m| commit_version(m.location.filename()?))
            .filter(|v| after.is_none_or(|a| *v > a))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The commits of `versions`, in that order; a version whose file is gone (expired) is
    /// skipped.
    pub async fn commits(&self, versions: &[i64]) -> Result<Vec<Commit>, object_store::Error> {
        let reads: Vec<_> = versions
            .iter()
            .map(|&v| {
                let store = self.store.clone();
                let path = self.commit_path(v);
                async move {
                    match store.get(&path).await {
                        Ok(r) => Ok(Some(Commit {
                            version: v,
                            info: commit_info(&r.bytes().await?),
                        })),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .collect();
        let read: Vec<Option<Commit>> = futures::stream::iter(reads)
            .buffered(CONCURRENT_READS)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }
}

/// The version of a commit file name (`00000000000000000042.json` → 42).
fn commit_version(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The `commitInfo` object of a commit file (newline-delimited actions).
fn commit_info(body: &[u8]) -> Map<String, Value> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .find_map(|action| match action {
            Value::Object(mut o) => match o.remove("commitInfo") {
                Some(Value::Object(info)) => Some(info),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_files_have_versions() {
        assert_eq!(commit_version("00000000000000000042.json"), Some(42));
        assert_eq!(
            commit_version("00000000000000000010.checkpoint.parquet"),
            None
        );
        assert_eq!(commit_version("_last_checkpoint"), None);
        assert_eq!(commit_version("00000000000000000042.crc"), None);
        assert_eq!(commit_version("42.json"), None);
    }

    #[test]
    fn the_commit_info_is_found_among_the_actions() {
        let body = br#"{"add":{"path":"a.parquet"}}
{"commitInfo":{"timestamp":1,"operation":"WRITE","strata.recompute":{"from_ms":0}}}
{"txn":{"appId":"x","version":3}}
"#;
        let info = commit_info(body);
        assert_eq!(info["operation"], "WRITE");
        assert_eq!(info["strata.recompute"]["from_ms"], 0);
        assert!(commit_info(b"{\"add\":{}}\n").is_empty());
        assert!(commit_info(b"not json\n").is_empty());
    }

    #[tokio::test]
    async fn versions_come_from_file_names_not_positions() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let log = CommitLog::new(store.clone(), "t");
        // Versions 0..3 expired, a checkpoint at 3, commits 4..6 remain.
        for name in [
            "00000000000000000003.checkpoint.parquet",
            "_last_checkpoint",
            "00000000000000000004.json",
            "00000000000000000005.json",
            "00000000000000000006.json",
        ] {
            let body = format!("{{\"commitInfo\":{{\"n\":\"{name}\"}}}}\n");
            store
                .put(&Path::from(format!("t/_delta_log/{name}")), body.into())
                .await
                .unwrap();
        }
        assert_eq!(log.versions_after(None).await.unwrap(), vec![4, 5, 6]);
        assert_eq!(log.versions_after(Some(4)).await.unwrap(), vec![5, 6]);
        assert!(log.versions_after(Some(6)).await.unwrap().is_empty());
        let commits = log.commits(&[5, 6, 7]).await.unwrap();
        assert_eq!(commits.len(), 2, "a missing file is skipped");
        assert_eq!(commits[1].version, 6);
        assert_eq!(commits[1].info["n"], "00000000000000000006.json");
    }
}
