//! An insert whose body is cut short — strata-speed SIGKILLed or its connection broken in the
//! middle of the request — must commit nothing. ClickHouse commits the rows it parsed when an
//! HTTP body ends early, so a batch of many rows would land as a prefix without its offset
//! markers and be counted again by the next owner. A batch is therefore one row: cut anywhere,
//! it does not parse. This test captures the writer's real request, replays it to ClickHouse cut
//! at every chunk boundary and all along the body, and then with all its data but no end.

use crate::common;

use std::time::Duration;

use common::*;
use strata_speed::clickhouse::writer::RollupWriter;
use strata_speed::rollup::{Batch, Labels};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts one request, answers 200 and returns its bytes (head and chunked body).
async fn capture(listener: TcpListener) -> Vec<u8> {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    buf
}

/// Offsets in `body` (chunked) where a chunk ends, the last (zero-length) one excluded.
fn chunk_ends(body: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut i = 0;
    loop {
        let line_end = i + body[i..].windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[i..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            return ends;
        }
        i = line_end + 2 + size + 2;
        ends.push(i);
    }
}

/// Sends `bytes` to ClickHouse, closes the sending side and waits for the answer.
async fn replay(ch_port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", ch_port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

const EVENTS: u64 = 200_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_cut_anywhere_commits_nothing_and_whole_commits_once() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let env = TestEnv::new("cut").await;
    strata_speed::clickhouse::schema::migrate(&env.cfg.clickhouse)
        .await
        .expect("schema");
    // A batch big enough to travel in several chunks.
    let mut batch = Batch::default();
    let labels = |i: u64| Labels {
        metric_name: format!("m{}", i % 7).into(),
        source: "cut-test".into(),
        tag_keys: vec!["host".to_owned()].into(),
        tag_values: vec![format!("h{i}")].into(),
    };
    let t0 = 1_795_000_000_000i64;
    for i in 0..EVENTS {
        let series = i % 20_000;
        let value = (i as f64 * 0.618_033_988_7).fract() * 1e6;
        batch.add(series, t0 + (i as i64 % 30) * 60_000, value, || {
            labels(series)
        });
    }
    batch.cover(3, 39_999);
    batch.cover(4, 17);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = listener.local_addr().unwrap().port();
    let captured = tokio::spawn(capture(listener));
    let mut cfg = env.cfg.clickhouse.clone();
    cfg.url = format!("http://127.0.0.1:{fake}");
    RollupWriter::new(&cfg, &env.cfg.kafka.topic, Duration::from_secs(1))
        .insert_once(&batch)
        .await
        .expect("the capture answers 200");
    let request = captured.await.unwrap();
    let head_len = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&request[..head_len]).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body = &request[head_len..];
    let ends = chunk_ends(body);
    assert!(
        body.len() > 100_000,
        "a batch of {EVENTS} events is a big body"
    );

    let ch_port: u16 = env
        .cfg
        .clickhouse
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let counted = || async {
        env.client()
            .query("SELECT count() FROM speed_rollup_1m")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    // Cut at every chunk boundary before the data is complete (a clean end to ClickHouse), and
    // all along the body.
    let data_end = *ends.last().unwrap();
    let mut cuts: Vec<usize> = ends[..ends.len() - 1].to_vec();
    cuts.extend((1..16).map(|k| data_end * k / 16));
    cuts.push(data_end - 3); // all but the last byte of the data

    for cut in cuts {
        let mut bytes = request[..head_len].to_vec();
        bytes.extend_from_slice(&body[..cut]);
        replay(ch_port, &bytes).await;
        assert_eq!(
            counted().await,
            0,
            "a body cut at byte {cut} of {} committed rows",
            body.len()
        );
    }
    // All of the data without the body's end commits the batch once, markers included — the
    // row is whole (the whole request does the same).
    replay(ch_port, &request[..head_len + data_end]).await;
    let rows = env
        .client()
        .query("SELECT toUInt64(sumMerge(cnt)) FROM speed_rollup_1m WHERE metric_name != ''")
        .fetch_one::<u64>()
        .await
        .unwrap();
    assert_eq!(rows, EVENTS);
    let writer = RollupWriter::new(
        &env.cfg.clickhouse,
        &env.cfg.kafka.topic,
        Duration::from_secs(1),
    );
    let stored = writer.stored_offsets().await.unwrap();
    assert_eq!(stored.get(&3), Some(&39_999));
    assert_eq!(stored.get(&4), Some(&17));
    env.drop_database().await;
}
