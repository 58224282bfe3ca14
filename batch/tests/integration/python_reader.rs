//! The lake reads back with an independent reader: Python's `deltalake` + pyarrow (installed into
//! `.strata/venv` by `make setup` / `make up`) sees the same rows, versions, Kafka transaction
//! versions and rollups as Strata. Local lake; no servers.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use strata_batch::recompute::recompute;
use strata_testkit::gen::truth::hour_start;
use strata_testkit::gen::Spec;

fn python() -> PathBuf {
    let home = std::env::var("STRATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.strata"));
    home.join("venv/bin/python")
}

// The reader leaves with os._exit once its answer is out: deltalake's Python binding can abort
// in its runtime's shutdown ("terminate called without an active exception", delta-rs #2184)
// after the work is done, which would fail the test for nothing Strata wrote.
const READER: &str = r#"
import json, os, sys, deltalake
lake = sys.argv[1]
ev = deltalake.DeltaTable(lake + "/events")
h = deltalake.DeltaTable(lake + "/rollup_1h").to_pyarrow_table(columns=["count", "sum", "p99"])
print(json.dumps({
    "events": ev.to_pyarrow_table(columns=["event_id"]).num_rows,
    "version": ev.version(),
    "txn": {p: ev.transaction_version("strata-archive-%d" % p) for p in range(3)},
    "rollup_events": sum(h.column("count").to_pylist()),
    "rollup_sum": sum(h.column("sum").to_pylist()),
    "p99_sum": sum(h.column("p99").to_pylist()),
}))
sys.stdout.flush()
os._exit(0)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_what_strata_wrote() {
    let (dir, cfg) = common::local_lake();
    let lake = dir.path().join("lake");
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now,
        duplicate_ratio: 0.05,
        seed: 9,
        ..Spec::default()
    };
    let events = common::archived(spec, 9000, 3, |_| {});
    common::archive_all(&cfg, &events, 3000).await;
    recompute(
        &cfg,
        hour_start(now - 3_600_000),
        hour_start(now) + 3_600_000,
    )
    .await
    .unwrap();

    let out = Command::new(python())
        .args(["-c", READER, &lake.display().to_string()])
        .output()
        .expect("run the venv's python (make setup installs it)");
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(py["events"], 9000);
    assert_eq!(py["version"], 2, "three commits: versions 0, 1, 2");
    for p in 0..3 {
        assert_eq!(
            py["txn"][p.to_string()],
            2999,
            "transaction version of partition {p}"
        );
    }
    let ours =
        common::first_row(&cfg, "SELECT sum(count), sum(sum), sum(p99) FROM rollup_1h").await;
    assert_eq!(py["rollup_events"].to_string(), ours[0]);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(close(
        py["rollup_sum"].as_f64().unwrap(),
        ours[1].parse().unwrap()
    ));
    assert!(close(
        py["p99_sum"].as_f64().unwrap(),
        ours[2].parse().unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_rows_and_offsets_and_stays_readable() {
    use strata_batch::archive::compaction::compact;
    let (dir, cfg) = common::local_lake();
    let lake = dir.path().join("lake");
    let now = chrono::Utc::now().timestamp_millis();
    let spec = Spec {
        base_time_ms: now,
        seed: 2,
        ..Spec::default()
    };
    let events = common::archived(spec, 4000, 1, |_| {});
    let mut archive = common::archive_all(&cfg, &events, 200).await;
    let c = compact(&cfg, 64 << 20).await.unwrap();
    assert!(
        c.files_removed >= 20 && c.files_added < c.files_removed,
        "{c:?}"
    );
    assert_eq!(
        common::first_row(
            &cfg,
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        )
        .await,
        vec!["4000", "4000"]
    );
    assert_eq!(
        archive.stored_offsets(&[0]).await.unwrap(),
        BTreeMap::from([(0, 3999)]),
        "offsets survive"
    );
    let out = Command::new(python())
        .args(["-c", "import sys, deltalake; t = deltalake.DeltaTable(sys.argv[1]); print(t.to_pyarrow_table().num_rows, len(t.file_uris()))"])
        .arg(lake.join("events"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().next(),
        Some("4000"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
