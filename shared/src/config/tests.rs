use std::time::Duration;

use super::load::from_sources;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn key_of(e: ConfigError) -> (String, String) {
    match e {
        ConfigError::Key { key, origin, .. } => (key, origin),
        other => panic!("expected a key error, got {other}"),
    }
}

#[test]
fn defaults_need_no_file_and_are_valid() {
    let c = from_sources(None, env(&[])).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.kafka.topic, "metrics-events");
    assert_eq!(c.kafka.dlq_topic, "metrics-events-dlq");
    assert_eq!(c.validation.max_past, Duration::from_secs(7 * 86400));
}

#[test]
fn the_documented_example_is_valid_and_complete() {
    let text = include_str!("../../strata.toml.example");
    let c = from_sources(Some((text, "strata.toml.example")), env(&[])).unwrap();
    assert_eq!(
        c.kafka
            .consumer_options
            .get("auto.offset.reset")
            .map(String::as_str),
        Some("earliest")
    );
    // Every field of the default configuration appears in the example (commented or not).
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    for (section, table) in defaults.as_table().unwrap() {
        assert!(
            text.contains(&format!("[{section}]")),
            "example lacks [{section}]"
        );
        for key in table.as_table().unwrap().keys() {
            let documented = text.contains(&format!("\n{key} ="))
                || text.contains(&format!("# {key} ="))
                || text.contains(&format!("[{section}.{key}]"));
            assert!(documented, "example lacks {section}.{key}");
        }
    }
}

#[test]
fn file_values_override_defaults() {
    let c = Config::from_toml(
        r#"
        [kafka]
        brokers = "k1:9092, k2:9093"
        session_timeout = "10s"
        [kafka.consumer_options]
        "fetch.min.bytes" = 1024
        "check.crcs" = true
        [clickhouse]
        url = "https://ch.example:8443"
        password = "hunter2"
        [validation]
        max_tags = 8
        "#,
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "k1:9092, k2:9093");
    assert_eq!(c.kafka.session_timeout, Duration::from_secs(10));
    assert_eq!(c.kafka.consumer_options["fetch.min.bytes"], "1024");
    assert_eq!(c.kafka.consumer_options["check.crcs"], "true");
    assert_eq!(c.validation.max_tags, 8);
    assert_eq!(
        c.validation.max_future,
        Duration::from_secs(600),
        "untouched keys keep defaults"
    );
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "secrets never appear in Debug output"
    );
    assert_eq!(c.clickhouse.password.expose(), "hunter2");
}

#[test]
fn environment_overrides_file() {
    let file = "[kafka]\nbrokers = \"file:9092\"\n[validation]\nmax_tags = 8\n";
    let c = from_sources(
        Some((file, "s.toml")),
        env(&[
            ("STRATA__KAFKA__BROKERS", "env:9092"),
            ("STRATA__VALIDATION__MAX_TAGS", "16"),
            ("STRATA__CLICKHOUSE__PASSWORD", "123"),
            (
                "STRATA__KAFKA__CONSUMER_OPTIONS__AUTO.OFFSET.RESET",
                "latest",
            ),
            ("STRATA__S3__ENDPOINT", "http://127.0.0.1:8333"),
            ("STRATA__S3__ALLOW_HTTP", "true"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "env:9092");
    assert_eq!(c.validation.max_tags, 16);
    assert_eq!(
        c.clickhouse.password.expose(),
        "123",
        "a numeric-looking password stays a string"
    );
    assert_eq!(c.kafka.consumer_options["auto.offset.reset"], "latest");
    assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
    assert!(c.s3.allow_http);
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = Config::from_toml("[kafka]\nbrokerz = \"x:1\"").unwrap_err();
    assert!(e.to_string().contains("brokerz"), "{e}");
    let e = from_sources(None, env(&[("STRATA__KAFKA__TOPICS", "t")])).unwrap_err();
    assert!(e.to_string().contains("topics"), "{e}");
    let e = Config::from_toml("[nonsense]\na = 1").unwrap_err();
    assert!(e.to_string().contains("nonsense"), "{e}");
}

#[test]
fn type_errors_name_the_key_and_origin() {
    let e = from_sources(None, env(&[("STRATA__VALIDATION__MAX_TAGS", "many")])).unwrap_err();
    assert_eq!(
        key_of(e),
        (
            "validation.max_tags".into(),
            "environment variable STRATA__VALIDATION__MAX_TAGS".into()
        )
    );
    let e = from_sources(
        Some(("[kafka]\nsession_timeout = \"soon\"", "x.toml")),
        env(&[]),
    )
    .unwrap_err();
    assert_eq!(key_of(e), ("kafka.session_timeout".into(), "x.toml".into()));
}

#[test]
fn bad_toml_names_the_file() {
    let e = from_sources(Some(("[kafka\nbrokers=", "bad.toml")), env(&[])).unwrap_err();
    assert!(
        matches!(&e, ConfigError::File { path, .. } if path == "bad.toml"),
        "{e}"
    );
}

#[test]
fn validation_names_the_key() {
    let cases = [
        ("[kafka]\nbrokers = \"nohostport\"", "kafka.brokers"),
        ("[kafka]\nbrokers = \"a:1,b:notaport\"", "kafka.brokers"),
        ("[kafka]\ntopic = \"bad topic\"", "kafka.topic"),
        ("[kafka]\ndlq_topic = \"metrics-events\"", "kafka.dlq_topic"),
        (
            "[kafka]\nsession_timeout = \"10ms\"",
            "kafka.session_timeout",
        ),
        (
            "[kafka.consumer_options]\n\"enable.auto.commit\" = \"true\"",
            "kafka.consumer_options.\"enable.auto.commit\"",
        ),
        (
            "[kafka.options]\n\"bootstrap.servers\" = \"x:1\"",
            "kafka.options.\"bootstrap.servers\"",
        ),
        ("[clickhouse]\nurl = \"ftp://x\"", "clickhouse.url"),
        (
            "[clickhouse]\ndatabase = \"x; DROP TABLE y\"",
            "clickhouse.database",
        ),
        (
            "[clickhouse]\nrequest_timeout = \"0s\"",
            "clickhouse.request_timeout",
        ),
        ("[lake]\nurl = \"gs://bucket/x\"", "lake.url"),
        ("[batch]\nschedule = \"every hour\"", "batch.schedule"),
        (
            "[batch]\nschedule_closed_hours = 0",
            "batch.schedule_closed_hours",
        ),
        ("[batch]\nserve_listen = \"9103\"", "batch.serve_listen"),
        ("[serving]\nlisten = \"localhost\"", "serving.listen"),
        ("[serving]\npg_listen = \"5433\"", "serving.pg_listen"),
        (
            "[serving]\nflight_listen = \"50051\"",
            "serving.flight_listen",
        ),
        ("[serving]\nauth_token = \"short\"", "serving.auth_token"),
        ("[serving]\nauth_all = true", "serving.auth_all"),
        (
            "[serving]\nmax_points_per_series = 0",
            "serving.max_points_per_series",
        ),
        ("[serving]\nquery_timeout = \"0s\"", "serving.query_timeout"),
        ("[lake]\nurl = \"s3://\"", "lake.url"),
        ("[s3]\nendpoint = \"not a url\"", "s3.endpoint"),
        ("[validation]\nmax_tags = 0", "validation.max_tags"),
        (
            "[validation]\nmax_message_bytes = 1",
            "validation.max_message_bytes",
        ),
        ("[telemetry]\nlog_level = \"[[[\"", "telemetry.log_level"),
    ];
    for (text, key) in cases {
        let e = Config::from_toml(text).expect_err(text);
        assert_eq!(key_of(e.clone()).0, key, "{text} gave: {e}");
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn validation_errors_from_env_name_the_variable() {
    let e = from_sources(None, env(&[("STRATA__KAFKA__BROKERS", "nope")])).unwrap_err();
    assert_eq!(
        key_of(e),
        (
            "kafka.brokers".into(),
            "environment variable STRATA__KAFKA__BROKERS".into()
        )
    );
}
