//! An insert ClickHouse is still running after its client is gone (a timed-out attempt, a
//! SIGKILLed strata-speed) can commit after the next owner read the offsets — and the batch
//! would be counted twice. The writer waits for such queries before it trusts the offsets.
//! Slow queries under the writer's query-id prefix stand in for those inserts here
//! (`SELECT sleep(…)`: ClickHouse keeps running it when the HTTP client goes away).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use strata_speed::clickhouse::writer::RollupWriter;

/// Query ids with `prefix` that ClickHouse is running now.
async fn running(env: &TestEnv, prefix: &str) -> Vec<String> {
    strata_shared::clickhouse::server_client(&env.cfg.clickhouse)
        .query("SELECT query_id FROM system.processes WHERE position(query_id, ?) = 1")
        .bind(prefix)
        .fetch_all::<String>()
        .await
        .expect("system.processes")
}

/// Starts `SELECT sleep(secs)` under `query_id`, drops the client once ClickHouse runs it.
async fn orphan_query(env: &TestEnv, query_id: &str, secs: u32) {
    let client = strata_shared::clickhouse::server_client(&env.cfg.clickhouse)
        .with_setting("query_id", query_id);
    let task = tokio::spawn(async move {
        let _ = client
            .query(&format!("SELECT sleep({secs})"))
            .fetch_all::<u8>()
            .await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(env, query_id).await.contains(&query_id.to_owned()) {
        assert!(Instant::now() < deadline, "the query never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_are_read_only_after_running_inserts_of_the_topic_finished() {
    let env = TestEnv::new("inflight").await;
    strata_speed::clickhouse::schema::migrate(&env.cfg.clickhouse)
        .await
        .expect("schema");
    let writer = RollupWriter::new(
        &env.cfg.clickhouse,
        &env.cfg.kafka.topic,
        Duration::from_secs(1),
    );
    let prefix = writer.query_id_prefix();
    assert!(prefix.contains(&env.cfg.kafka.topic) && prefix.contains(&env.cfg.clickhouse.database));

    orphan_query(&env, &format!("{prefix}orphan"), 2).await;
    assert_eq!(running(&env, &prefix).await.len(), 1);
    writer.settled_offsets().await.expect("offsets");
    assert!(
        running(&env, &prefix).await.is_empty(),
        "the offsets were read while an insert of the topic could still land"
    );
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insert_running_past_the_limit_is_killed_before_offsets_are_read() {
    let env = TestEnv::new("inflight-kill").await;
    let writer = RollupWriter::new(
        &env.cfg.clickhouse,
        &env.cfg.kafka.topic,
        Duration::from_secs(1),
    );
    let prefix = writer.query_id_prefix();
    orphan_query(&env, &format!("{prefix}stuck"), 3).await;
    writer
        .wait_for_inflight(Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(
        running(&env, &prefix).await.is_empty(),
        "the stuck insert must be gone"
    );
}
