//! The durable queue of recompute jobs: one JSON document per job under `_strata/jobs/` in the
//! lake (local folder or S3), so requests survive restarts of every service.
//!
//! The serving API and the CLI [`submit`] jobs (state `queued`); `strata-batch serve` claims the
//! oldest queued job (`running`), runs it, and records the outcome (`done` with its report, or
//! `failed` with the error). Submitting is idempotent: the same idempotency key always names the
//! same job (created once, by a conditional put), and a request without a key for a range that
//! is already queued or running returns that job instead of adding another. One `serve` process
//! runs jobs; a job found `running` when it starts was cut short by a crash and is queued again.
//!
//! The queue stays small and cheap to work: each job that is queued or running also has an
//! empty marker `_strata/queue/<queued at>-<id>`, so claiming and the duplicate check read the
//! markers and the documents of active jobs only — not every finished job — and finished jobs
//! older than `batch.jobs_retention` are removed by [`JobQueue::prune`].

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use strata_shared::Config;

/// Where jobs live, relative to the lake root.
pub const JOBS_PREFIX: &str = "_strata/jobs";
/// Where the markers of queued and running jobs live.
pub const ACTIVE_PREFIX: &str = "_strata/queue";
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 256;
/// Widest range one job may recompute.
pub const MAX_JOB_RANGE_MS: i64 = 400 * 86_400_000;

const HOUR_MS: i64 = 3_600_000;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for `strata-batch serve`.
    Queued,
    /// Being recomputed.
    Running,
    /// Finished; the report says what was written.
    Done,
    /// Gave up; `error` says why.
    Failed,
}

/// Who asked for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /api/v1/recompute`.
    Api,
    /// `strata-batch recompute --queue`.
    Cli,
    /// The cron schedule of `strata-batch serve`.
    Schedule,
}

/// What a finished job wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Archive version the rollups were computed from.
    pub archive_version: i64,
    /// Rows written to rollup_1m.
    pub rows_1m: usize,
    /// Rows written to rollup_1h.
    pub rows_1h: usize,
    /// What it waited for before reading the archive (requested recomputes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<crate::archive::progress::Waited>,
}

/// One recompute job, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Stable id (also the file name).
    pub id: String,
    /// Range start, Unix ms (inclusive, a whole hour).
    pub from_ms: i64,
    /// Range end, Unix ms (exclusive, a whole hour).
    pub to_ms: i64,
    /// Current state.
    pub state: JobState,
    /// Who asked.
    pub trigger: Trigger,
    /// The caller's idempotency key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When it was queued (Unix ms).
    pub queued_at_ms: i64,
    /// When it last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// When it finished (done or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// How many times it was started.
    pub attempts: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it wrote, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<JobReport>,
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The request is wrong (the caller's fault).
    #[error("{0}")]
    Invalid(String),
    /// No job has this id.
    #[error("no job {0:?}")]
    NotFound(String),
    /// The lake could not be read or written (retry later).
    #[error("job store: {0}")]
    Store(#[from] object_store::Error),
    /// The lake could not be opened (its configuration, or its local folder).
    #[error("lake: {0}")]
    Lake(#[from] strata_shared::Error),
    /// A stored job document is not valid JSON for a job.
    #[error("job {id}: unreadable document: {source}")]
    Corrupt {
        /// The job file.
        id: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Checks a requested range: whole hours, from before to, not too wide.
pub fn check_range(from_ms: i64, to_ms: i64) -> Result<(), JobError> {
    if from_ms % HOUR_MS != 0 || to_ms % HOUR_MS != 0 {
        return Err(JobError::Invalid(format!(
            "from ({from_ms}) and to ({to_ms}) must be whole hours (Unix ms divisible by 3600000)"
        )));
    }
    if to_ms <= from_ms {
        return Err(JobError::Invalid(format!(
            "to ({to_ms}) must be after from ({from_ms})"
        )));
    }
    if to_ms - from_ms > MAX_JOB_RANGE_MS {
        return Err(JobError::Invalid(
            "a job may cover at most 400 days; split the range".into(),
        ));
    }
    if from_ms < 0 {
        return Err(JobError::Invalid("from must not be before 1970".into()));
    }
    Ok(())
}

/// The queue, in the configured lake.
#[derive(Clone)]
pub struct JobQueue {
    store: Arc<dyn ObjectStore>,
    reads: Arc<std::sync::atomic::AtomicU64>,
}

impl JobQueue {
    /// The queue of the configured lake.
    pub fn open(cfg: &Config) -> Result<Self, JobError> {
        let store = strata_shared::lake::object_store(&cfg.lake, &cfg.s3)?;
        Ok(Self {
            store,
            reads: Arc::default(),
        })
    }

    fn path(id: &str) -> Path {
        Path::from(format!("{JOBS_PREFIX}/{id}.json"))
    }

    fn marker(job: &Job) -> Path {
        Path::from(format!(
            "{ACTIVE_PREFIX}/{:013}-{}",
            job.queued_at_ms, job.id
        ))
    }

    /// Job documents read since the queue was opened (the cost of working it).
    pub fn documents_read(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The active (queued or running) jobs, oldest first, from their markers; a marker whose
    /// job has finished or vanished (a crash between two writes) is removed.
    pub async fn active(&self) -> Result<Vec<Job>, JobError> {
        let prefix = Path::from(ACTIVE_PREFIX);
        let mut metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let Some((_, id)) = m.location.filename().and_then(|f| f.split_once('-')) else {
                continue;
            };
            match self.get(id).await {
                Ok(j) if matches!(j.state, JobState::Queued | JobState::Running) => out.push(j),
                Ok(_) | Err(JobError::NotFound(_)) => self.forget(&m.location).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn forget(&self, marker: &Path) -> Result<(), JobError> {
        match self.store.delete(marker).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a job for `[from_ms, to_ms)`, or returns the one this request already made: the
    /// bool says whether it is new.
    pub async fn submit(
        &self,
        from_ms: i64,
        to_ms: i64,
        trigger: Trigger,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<(Job, bool), JobError> {
        check_range(from_ms, to_ms)?;
        let id = match idempotency_key {
            Some(k) => {
                if k.is_empty() || k.len() > MAX_KEY_LEN || k.chars().any(|c| c.is_control()) {
                    return Err(JobError::Invalid(format!(
                        "the idempotency key must be 1 to {MAX_KEY_LEN} printable characters"
                    )));
                }
                format!("k{:016x}", xxhash_rust::xxh64::xxh64(k.as_bytes(), 0))
            }
            None => {
                if let Some(j) = self
                    .active()
                    .await?
                    .into_iter()
                    .find(|j| j.from_ms == from_ms && j.to_ms == to_ms)
                {
                    return Ok((j, false));
                }
                format!("j{now_ms:013}{:08x}", uuid::Uuid::new_v4().as_u128() as u32)
            }
        };
        let job = Job {
            id: id.clone(),
            from_ms,
            to_ms,
            state: JobState::Queued,
            trigger,
            idempotency_key: idempotency_key.map(str::to_owned),
            queued_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            attempts: 0,
            error: None,
            report: None,
        };
        let body = serde_json::to_vec_pretty(&job).expect("a job serialises");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Self::path(&id), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => {
                self.store
                    .put(&Self::marker(&job), PutPayload::default())
                    .await?;
                Ok((job, true))
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(&id).await?;
                if (existing.from_ms, existing.to_ms) != (from_ms, to_ms) {
                    return Err(JobError::Invalid(format!(
                        "idempotency key already used for job {id} over a different range"
                    )));
                }
                Ok((existing, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One job by id.
    pub async fn get(&self, id: &str) -> Result<Job, JobError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(JobError::NotFound(id.to_owned()));
        }
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = match self.store.get(&Self::path(id)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(JobError::NotFound(id.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|source| JobError::Corrupt {
            id: id.to_owned(),
            source,
        })
    }

    /// Every job, oldest first.
    pub async fn list(&self) -> Result<Vec<Job>, JobError> {
        let prefix = Path::from(JOBS_PREFIX);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut jobs = Vec::with_capacity(metas.len());
        for m in metas {
            let Some(id) = m.location.filename().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            match self.get(id).await {
                Ok(j) => jobs.push(j),
                Err(JobError::NotFound(_)) => {} // removed while listing
                Err(e) => return Err(e),
            }
        }
        jobs.sort_by(|a, b| (a.queued_at_ms, &a.id).cmp(&(b.queued_at_ms, &b.id)));
        Ok(jobs)
    }

    /// Stores a job's new state.
    pub async fn save(&self, job: &Job) -> Result<(), JobError> {
        let body = serde_json::to_vec_pretty(job).expect("a job serialises");
        self.store
            .put(&Self::path(&job.id), PutPayload::from(body))
            .await?;
        Ok(())
    }

    /// Queues again every job left `running` by a process that died, and gives every active job
    /// its marker (a crash between writing a job and its marker). Call once at start-up: it
    /// reads every job.
    pub async fn requeue_interrupted(&self) -> Result<usize, JobError> {
        let mut n = 0;
        for mut j in self.list().await? {
            if !matches!(j.state, JobState::Queued | JobState::Running) {
                continue;
            }
            if j.state == JobState::Running {
                j.state = JobState::Queued;
                self.save(&j).await?;
                n += 1;
            }
            self.store
                .put(&Self::marker(&j), PutPayload::default())
                .await?;
        }
        Ok(n)
    }

    /// Marks the oldest queued job running and returns it. Reads the active jobs only.
    pub async fn claim(&self, now_ms: i64) -> Result<Option<Job>, JobError> {
        let Some(mut job) = self
            .active()
            .await?
            .into_iter()
            .find(|j| j.state == JobState::Queued)
        else {
            return Ok(None);
        };
        job.state = JobState::Running;
        job.started_at_ms = Some(now_ms);
        job.attempts += 1;
        self.save(&job).await?;
        Ok(Some(job))
    }

    /// Records a job's outcome.
    pub async fn finish(
        &self,
        mut job: Job,
        outcome: Result<JobReport, String>,
        now_ms: i64,
    ) -> Result<Job, JobError> {
        job.finished_at_ms = Some(now_ms);
        match outcome {
            Ok(r) => {
                job.state = JobState::Done;
                job.report = Some(r);
                job.error = None;
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(e);
            }
        }
        self.save(&job).await?;
        self.forget(&Self::marker(&job)).await?;
        Ok(job)
    }

    /// Removes finished jobs that finished more than `retention` before `now_ms`; returns how
    /// many. Reads every job: run it now and then, not per claim.
    pub async fn prune(
        &self,
        now_ms: i64,
        retention: std::time::Duration,
    ) -> Result<usize, JobError> {
        let cutoff = now_ms - retention.as_millis() as i64;
        let mut n = 0;
        for j in self.list().await? {
            let finished = matches!(j.state, JobState::Done | JobState::Failed);
            if finished && j.finished_at_ms.is_some_and(|t| t < cutoff) {
                match self.store.delete(&Self::path(&j.id)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> (tempfile::TempDir, JobQueue) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.lake.url = dir.path().display().to_string();
        (dir, JobQueue::open(&cfg).unwrap())
    }

    #[test]
    fn ranges_are_checked() {
        assert!(check_range(0, HOUR_MS).is_ok());
        for (f, t) in [(1, HOUR_MS), (HOUR_MS, HOUR_MS), (2 * HOUR_MS, HOUR_MS)] {
            assert!(matches!(check_range(f, t), Err(JobError::Invalid(_))));
        }
        assert!(check_range(0, MAX_JOB_RANGE_MS + HOUR_MS).is_err());
    }

    #[tokio::test]
    async fn a_job_lives_through_its_states_on_disk() {
        let (_d, q) = queue();
        let (job, new) = q.submit(0, HOUR_MS, Trigger::Api, None, 5).await.unwrap();
        assert!(new);
        assert_eq!(q.get(&job.id).await.unwrap().state, JobState::Queued);
        // The same range while queued: the same job.
        let (again, new) = q.submit(0, HOUR_MS, Trigger::Api, None, 6).await.unwrap();
        assert_eq!((again.id.as_str(), new), (job.id.as_str(), false));

        let running = q.claim(10).await.unwrap().unwrap();
        assert_eq!((running.state, running.attempts), (JobState::Running, 1));
        assert!(q.claim(11).await.unwrap().is_none(), "one job, claimed");
        // A crash: the job is queued again at start-up.
        assert_eq!(q.requeue_interrupted().await.unwrap(), 1);
        let running = q.claim(12).await.unwrap().unwrap();
        assert_eq!(running.attempts, 2);
        let report = JobReport {
            archive_version: 3,
            rows_1m: 60,
            rows_1h: 1,
            waited: None,
        };
        let done = q.finish(running, Ok(report.clone()), 20).await.unwrap();
        assert_eq!(q.get(&done.id).await.unwrap().report, Some(report));
        // Done: a new request for the range is a new job.
        let (other, new) = q.submit(0, HOUR_MS, Trigger::Api, None, 30).await.unwrap();
        assert!(new && other.id != job.id);
        let failed = q.finish(other, Err("boom".into()), 31).await.unwrap();
        let listed = q.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].state, JobState::Failed);
        assert_eq!(listed[1].error.as_deref(), Some("boom"));
        assert_eq!(listed[1].id, failed.id);
    }

    #[tokio::test]
    async fn claiming_reads_the_active_jobs_only_and_old_ones_are_pruned() {
        let (_d, q) = queue();
        // Thousands of finished jobs.
        for i in 0..3000i64 {
            let (job, _) = q
                .submit(i * HOUR_MS, (i + 1) * HOUR_MS, Trigger::Schedule, None, i)
                .await
                .unwrap();
            let running = q.claim(i).await.unwrap().unwrap();
            assert_eq!(running.id, job.id);
            q.finish(running, Err("x".into()), i * HOUR_MS)
                .await
                .unwrap();
        }
        let (queued, new) = q
            .submit(0, HOUR_MS, Trigger::Api, None, 5000)
            .await
            .unwrap();
        assert!(new, "finished jobs do not answer a new request");
        let before = q.documents_read();
        let claimed = q.claim(5001).await.unwrap().unwrap();
        assert_eq!(claimed.id, queued.id);
        assert!(
            q.documents_read() - before <= 2,
            "claim read {} job documents among 3001",
            q.documents_read() - before
        );
        assert!(q.claim(5002).await.unwrap().is_none());
        // Job i finished at hour i: those finished more than a day before hour 3000 go.
        let now = 3000 * HOUR_MS;
        let gone = q
            .prune(now, std::time::Duration::from_secs(86_400))
            .await
            .unwrap();
        assert_eq!(gone, 3000 - 24);
        assert_eq!(q.list().await.unwrap().len(), 3001 - gone);
        assert_eq!(q.get(&claimed.id).await.unwrap().state, JobState::Running);
    }

    #[tokio::test]
    async fn an_idempotency_key_names_one_job_forever() {
        let (_d, q) = queue();
        let (a, new_a) = q
            .submit(0, HOUR_MS, Trigger::Api, Some("req-1"), 1)
            .await
            .unwrap();
        let running = q.claim(2).await.unwrap().unwrap();
        q.finish(
            running,
            Ok(JobReport {
                archive_version: 1,
                rows_1m: 0,
                rows_1h: 0,
                waited: None,
            }),
            3,
        )
        .await
        .unwrap();
        let (b, new_b) = q
            .submit(0, HOUR_MS, Trigger::Api, Some("req-1"), 4)
            .await
            .unwrap();
        assert!(new_a && !new_b);
        assert_eq!((b.id, b.state), (a.id, JobState::Done));
        assert!(matches!(
            q.submit(0, 2 * HOUR_MS, Trigger::Api, Some("req-1"), 5)
                .await,
            Err(JobError::Invalid(_))
        ));
        assert!(matches!(
            q.get("../../etc/passwd").await,
            Err(JobError::NotFound(_))
        ));
    }
}
