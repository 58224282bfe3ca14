//! How far the archive has read each Kafka partition — so that a recompute asked for at time T
//! includes every event the broker had acknowledged before T.
//!
//! High watermarks cannot say it (tansu answers ListOffsets "latest" with values far too low),
//! but the end of a partition can be *seen*: the consumer is told when a fetch finds nothing
//! more (`enable.partition.eof`, checked on tansu and on Apache Kafka alike). A partition the
//! archiver has read to its end, with nothing of it waiting to be committed, is caught up: every
//! message acknowledged before the fetch that found the end is in the archive. Fetches can be
//! under way for [`SLACK_MS`], so a partition at its end now is caught up as of `now − SLACK_MS`.
//!
//! Each archiver instance publishes what it knows of its partitions in one small object,
//! `_strata/archive/progress/<instance>.json`, when someone waits: a waiting job first writes
//! `_strata/archive/wanted.json` (the time it waits for), which archivers look at every second.
//! The job then reads every instance's object and takes, per partition, the latest catch-up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

/// Where instances publish their progress.
pub const PROGRESS_PREFIX: &str = "_strata/archive/progress";
/// The newest time a job waits for.
pub const WANTED: &str = "_strata/archive/wanted.json";
/// How long a fetch that found a partition's end may have been under way.
pub const SLACK_MS: i64 = 2_000;
/// How often an archiver looks whether someone waits.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Progress objects not updated for this long belong to instances that are gone.
const STALE_MS: i64 = 86_400_000;

/// What one archiver instance knows of its partitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// When it was written (Unix ms).
    pub updated_at_ms: i64,
    /// Partition → every message acknowledged before this time (Unix ms) is committed.
    pub caught_up_at_ms: BTreeMap<i32, i64>,
}

/// A job's wait: `{"since_ms": …}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Wanted {
    /// The time the newest waiting job needs every partition caught up to.
    pub since_ms: i64,
}

/// The archiver's side: which partitions are at their end.
pub struct Tracker {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// Assigned partitions → whether the last thing seen of it was its end.
    at_end: BTreeMap<i32, bool>,
    published: Progress,
    next_look: Instant,
}

impl Tracker {
    /// A tracker publishing under a fresh instance id in the lake rooted at `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            store,
            path: Path::from(format!("{PROGRESS_PREFIX}/{id}.json")),
            at_end: BTreeMap::new(),
            published: Progress::default(),
            next_look: Instant::now(),
        }
    }

    /// Partitions assigned to this instance.
    pub fn assigned(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            self.at_end.insert(p, false);
        }
    }

    /// Partitions given up: nothing more is said of them.
    pub fn revoked(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            self.at_end.remove(&p);
            self.published.caught_up_at_ms.remove(&p);
        }
    }

    /// A message of `p` was read: it is not at its end.
    pub fn message(&mut self, p: i32) {
        self.at_end.insert(p, false);
    }

    /// A fetch found the end of `p`.
    pub fn end(&mut self, p: i32) {
        self.at_end.insert(p, true);
    }

    /// Partitions at their end with nothing waiting (`pending`: partitions with events not yet
    /// committed), caught up as of `now_ms − SLACK_MS`.
    pub fn caught_up(&self, pending: &BTreeSet<i32>, now_ms: i64) -> BTreeMap<i32, i64> {
        self.at_end
            .iter()
            .filter(|(p, end)| **end && !pending.contains(p))
            .map(|(p, _)| (*p, now_ms - SLACK_MS))
            .collect()
    }

    /// Once a second: if a job waits for a time this instance has not published yet, publish.
    /// Errors are logged; the next look tries again.
    pub async fn publish_if_wanted(&mut self, pending: &BTreeSet<i32>, now_ms: i64) {
        if Instant::now() < self.next_look {
            return;
        }
        self.next_look = Instant::now() + LOOK_EVERY;
        let wanted = match read::<Wanted>(&self.store, &Path::from(WANTED)).await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read what recomputes wait for");
                return;
            }
        };
        if self.published_at_least(wanted.since_ms) {
            return; // what it waits for is said already
        }
        let mut next = self.published.clone();
        for (p, t) in self.caught_up(pending, now_ms) {
            next.caught_up_at_ms.insert(p, t);
        }
        if next.caught_up_at_ms == self.published.caught_up_at_ms {
            return; // nothing new to say yet
        }
        next.updated_at_ms = now_ms;
        let body = serde_json::to_vec(&next).expect("serialises");
        match self.store.put(&self.path, PutPayload::from(body)).await {
            Ok(_) => self.published = next,
            Err(e) => tracing::debug!(error = %e, "cannot publish the archive's progress"),
        }
    }

    /// Whether every partition this instance holds is published caught up to `t`.
    fn published_at_least(&self, t: i64) -> bool {
        self.at_end.keys().all(|p| {
            self.published
                .caught_up_at_ms
                .get(p)
                .is_some_and(|&c| c >= t)
        })
    }

    /// Removes this instance's object (a clean stop).
    pub async fn retire(&self) {
        let _ = self.store.delete(&self.path).await;
    }
}

async fn read<T: for<'de> Deserialize<'de>>(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<T>, object_store::Error> {
    match store.get(path).await {
        Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?).ok()),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a recompute waited for before it read the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waited {
    /// The request time every partition had to be caught up to (Unix ms).
    pub since_ms: i64,
    /// How long it waited.
    pub waited_ms: i64,
    /// Partitions of the topic.
    pub partitions: usize,
    /// Partitions caught up to `since_ms` when it stopped waiting.
    pub caught_up: usize,
    /// Whether all were (false: the wait ran out, and the recompute may miss events).
    pub complete: bool,
}

/// Waits until the archive has committed every one of `partitions` partitions up to what was
/// acknowledged before `since_ms`, for at most `max_wait`.
pub async fn wait_for(
    store: &Arc<dyn ObjectStore>,
    since_ms: i64,
    partitions: usize,
    max_wait: Duration,
) -> Result<Waited, object_store::Error> {
    let started = Instant::now();
    let wanted = read::<Wanted>(store, &Path::from(WANTED)).await?;
    if wanted.is_none_or(|w| w.since_ms < since_ms) {
        let body = serde_json::to_vec(&Wanted { since_ms }).expect("serialises");
        store
            .put(&Path::from(WANTED), PutPayload::from(body))
            .await?;
    }
    loop {
        let caught_up = caught_up_to(store, since_ms).await?;
        let complete = partitions > 0 && caught_up >= partitions;
        if complete || started.elapsed() >= max_wait {
            return Ok(Waited {
                since_ms,
                waited_ms: started.elapsed().as_millis() as i64,
                partitions,
                caught_up,
                complete,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Partitions caught up to `since_ms` by some instance; stale objects of instances long gone
/// are removed on the way.
async fn caught_up_to(
    store: &Arc<dyn ObjectStore>,
    since_ms: i64,
) -> Result<usize, object_store::Error> {
    let metas: Vec<_> = store
        .list(Some(&Path::from(PROGRESS_PREFIX)))
        .try_collect()
        .await?;
    let mut best: BTreeMap<i32, i64> = BTreeMap::new();
    let now = chrono::Utc::now().timestamp_millis();
    for m in metas {
        let Some(p) = read::<Progress>(store, &m.location).await? else {
            continue;
        };
        if now - p.updated_at_ms > STALE_MS {
            let _ = store.delete(&m.location).await;
            continue;
        }
        for (part, t) in p.caught_up_at_ms {
            let b = best.entry(part).or_insert(t);
            *b = (*b).max(t);
        }
    }
    Ok(best.values().filter(|&&t| t >= since_ms).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, Arc::new(s))
    }

    #[test]
    fn a_partition_is_caught_up_at_its_end_with_nothing_pending() {
        let (_d, s) = store();
        let mut t = Tracker::new(s);
        t.assigned([0, 1, 2]);
        t.end(0);
        t.end(1);
        t.message(1); // more arrived after the end was seen
        t.end(2);
        let pending = BTreeSet::from([2]); // read, not yet committed
        assert_eq!(t.caught_up(&pending, 10_000), BTreeMap::from([(0, 8_000)]));
        t.revoked([0]);
        assert!(t.caught_up(&pending, 10_000).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_job_is_answered_by_the_instances_that_own_the_partitions() {
        let (_d, s) = store();
        let (mut a, mut b) = (Tracker::new(s.clone()), Tracker::new(s.clone()));
        a.assigned([0]);
        b.assigned([1]);
        a.end(0);
        let now = chrono::Utc::now().timestamp_millis();
        // Nobody waits: nothing is published.
        a.publish_if_wanted(&BTreeSet::new(), now).await;
        assert_eq!(caught_up_to(&s, now - 60_000).await.unwrap(), 0);
        // A job waits for `now − 5 s`; a is at its end, b is not yet.
        let job = {
            let s = s.clone();
            tokio::spawn(async move { wait_for(&s, now - 5_000, 2, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.next_look = Instant::now(); // its next look, a second later
        a.publish_if_wanted(&BTreeSet::new(), now).await;
        b.publish_if_wanted(&BTreeSet::new(), now).await;
        assert_eq!(caught_up_to(&s, now - 5_000).await.unwrap(), 1);
        b.end(1);
        b.next_look = Instant::now();
        b.publish_if_wanted(&BTreeSet::new(), now + 1_000).await;
        let waited = job.await.unwrap().unwrap();
        assert!(waited.complete, "{waited:?}");
        assert_eq!((waited.partitions, waited.caught_up), (2, 2));
        // A wait that cannot be met runs out and says so.
        let w = wait_for(&s, now + 60_000, 2, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(
            !w.complete && w.caught_up == 0 && w.waited_ms >= 300,
            "{w:?}"
        );
    }
}
