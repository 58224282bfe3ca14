//! API fuzzing with schemathesis (PyPI; installed into `.strata/venv` by `infra/stack.sh`): it
//! reads the OpenAPI description strata-serving publishes and sends generated valid and invalid
//! requests to every JSON, SQL and recompute endpoint. Every answer must be a declared status
//! with a declared content type — never a 5xx or a timeout — and the server must still be up.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Fixture;

const TOKEN: &str = "schemathesis-token";

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = std::env::var_os("STRATA_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".strata/venv/bin/st"));
    assert!(
        st.exists(),
        "schemathesis not found at {} (run `make up`, which installs it)",
        st.display()
    );
    st
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_in_the_json_sql_and_recompute_api() {
    // Runs a whole pipeline or loads both cores: never beside another such test.
    let _heavy = strata_testkit::heavy().await;
    let fx = Fixture::new("schemathesis", 3000, &[0, 1]).await;
    let server = fx
        .serve(&[
            ("STRATA__SERVING__AUTH_TOKEN", TOKEN),
            ("STRATA__SERVING__SQL_TIMEOUT", "10s"),
            ("STRATA__SERVING__QUERY_TIMEOUT", "10s"),
        ])
        .await;
    let report = fx.dir.path().join("schemathesis");
    let out = tokio::task::spawn_blocking({
        let (st, base, report) = (schemathesis(), server.base.clone(), report.clone());
        move || {
            Command::new(st)
                .arg("run")
                .arg(format!("{base}/api/v1/openapi.json"))
                .args(["--url", &base])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,ignored_auth",
                ])
                .args(["--max-examples", "100", "--seed", "20261125"])
                // A request that takes longer than this is a hang.
                .args(["--request-timeout", "30", "--workers", "2"])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args(["--generation-database", "none", "--no-color"])
                .args(["--report", "junit", "--report-dir"])
                .arg(&report)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n--- server log\n{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    // It really tested every operation of the description.
    let spec: serde_json::Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    assert!(operations >= 7, "the description lost operations");
    assert!(
        text.contains(&format!("Tested: {operations}")),
        "schemathesis did not test all {operations} operations:\n{text}"
    );
    // And the server is still answering.
    let r = server
        .http
        .get(server.url("/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("strata-serving still up");
    assert!(r.status().is_success());
}
