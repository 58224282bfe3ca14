//! Appends batches of events to the Delta table `events`, exactly once per Kafka offset.
//!
//! Each commit carries, besides the Parquet files, one Delta transaction action per Kafka
//! partition it covers: `app_id = strata-archive-<partition>`, `version = last offset`. Data and
//! offsets land in the same atomic commit, so after a crash the archiver resumes right after the
//! stored version and nothing is written twice (kafka-delta-ingest's scheme). A writer whose view
//! is stale loses the commit race ("concurrent transaction") and must reload and re-seek.
//! Each commit's info also lists the event hours it touched (`strata.archive.hours`), so the hours
//! changed since their last recompute (late events) can be found from the log.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use strata_shared::lake::{s3_options, LakeLocation};
use strata_shared::Config;

use super::schema::{to_record_batch, ArchivedEvent, PARTITION_COLUMN};

/// Name of the archive table under the lake.
pub const EVENTS_TABLE: &str = "events";

/// The Delta transaction app id of a Kafka partition.
pub fn app_id(partition: i32) -> String {
    format!("strata-archive-{partition}")
}

/// The `events` table, opened for appending.
pub struct Archive {
    table: DeltaTable,
}

/// Opens (or prepares to create) a table of the lake.
pub async fn open_table(cfg: &Config, name: &str) -> Result<DeltaTable, DeltaTableError> {
    let location = LakeLocation::parse(&cfg.lake.url).map_err(DeltaTableError::Generic)?;
    let url = url::Url::parse(&location.table_url(name))
        .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    let options: HashMap<String, String> = match location {
        LakeLocation::Local(path) => {
            std::fs::create_dir_all(path.join(name))
                .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
            HashMap::new()
        }
        LakeLocation::S3 { .. } => {
            deltalake::aws::register_handlers(None);
            s3_options(&cfg.s3)
        }
    };
    DeltaTable::try_from_url_with_storage_options(url, options).await
}

/// Reloads `table` to its newest version (a table not created yet stays empty).
pub async fn reload(table: &mut DeltaTable) -> Result<(), DeltaTableError> {
    if table.version().is_some() {
        table.update_incremental(None).await
    } else {
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The Kafka offsets `table`'s newest version stores for `partitions` (as the Delta transaction
/// versions of `app_id(partition)`); absent partitions have nothing stored yet.
pub async fn stored_offsets(
    table: &mut DeltaTable,
    partitions: &[i32],
    app_id: impl Fn(i32) -> String,
) -> Result<BTreeMap<i32, i64>, DeltaTableError> {
    reload(table).await?;
    let mut out = BTreeMap::new();
    if table.version().is_none() {
        return Ok(out);
    }
    let log_store = table.log_store();
    let snapshot = table.snapshot()?;
    for &p in partitions {
        if let Some(v) = snapshot
            .transaction_version(log_store.as_ref(), app_id(p))
            .await?
        {
            out.insert(p, v);
        }
    }
    Ok(out)
}

impl Archive {
    /// Opens the archive table of the configured lake.
    pub async fn open(cfg: &Config) -> Result<Self, DeltaTableError> {
        Ok(Self {
            table: open_table(cfg, EVENTS_TABLE).await?,
        })
    }

    /// Reloads the table to its newest version.
    pub async fn reload(&mut self) -> Result<(), DeltaTableError> {
        reload(&mut self.table).await
    }

    /// The last offset stored for each of `partitions` (absent: nothing archived yet).
    pub async fn stored_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, DeltaTableError> {
        stored_offsets(&mut self.table, partitions, app_id).await
    }

    /// Appends `events` and records `offsets` (last offset per partition) in the same commit.
    pub async fn append(
        &mut self,
        events: &[ArchivedEvent],
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), DeltaTableError> {
        let batch = to_record_batch(events).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let txns = offsets
            .iter()
            .map(|(&p, &o)| Transaction::new(app_id(p), o))
            .collect();
        // The event hours this commit touches, for finding hours changed since their last recompute.
        let hours: std::collections::BTreeSet<i64> = events
            .iter()
            .map(|e| e.event.timestamp_ms.div_euclid(3_600_000) * 3_600_000)
            .collect();
        let info = serde_json::json!({ "hours": hours });
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns([PARTITION_COLUMN])
            .with_writer_properties(props)
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transactions(txns)
                    .with_metadata([("strata.archive".to_owned(), info)]),
            )
            .await?;
        self.table = table;
        Ok(())
    }

    /// The table handle (for readers).
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }
}
