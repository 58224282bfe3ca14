//! Small-file compaction of the archive: each archive commit writes at least one Parquet file per
//! event date, so a busy archiver leaves many small files; compaction rewrites them into files of
//! about `target_bytes` (zstd) in one Delta commit. Readers see the same rows before and after,
//! and the Kafka transaction versions stay in the log, so the archiver resumes as before.

use std::num::NonZeroU64;

use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTableError;
use strata_shared::Config;

use super::writer::{open_table, EVENTS_TABLE};

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Small files rewritten.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
}

/// Compacts `events` toward files of `target_bytes`.
pub async fn compact(cfg: &Config, target_bytes: u64) -> Result<Compacted, DeltaTableError> {
    let mut table = open_table(cfg, EVENTS_TABLE).await?;
    table.load().await?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let target = NonZeroU64::new(target_bytes.max(1)).expect("at least 1");
    let (_, m) = table
        .optimize()
        .with_target_size(target)
        .with_writer_properties(props)
        .await?;
    Ok(Compacted {
        files_removed: m.num_files_removed,
        files_added: m.num_files_added,
    })
}
