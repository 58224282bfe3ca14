#!/usr/bin/env bash
# Printed at the end of `make demo`: where to look while the pipeline runs.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cat <<TXT

Strata demo is running: strata-gen produces ~2000 events/s (live timestamps, with a few duplicates,
late and malformed messages) to topic metrics-events on 127.0.0.1:9092. A point covers whole
minutes: the queries below answer once the first minute of load has ended (about a minute from now).

  Generator log     $ROOT/.strata/logs/gen.log
  Service logs      $ROOT/.strata/logs/
  Query API         http://127.0.0.1:8080   (Grafana: add a Prometheus data source with this URL, method POST,
                    or provision infra/grafana/ — see README "Grafana")
                    promtool query instant http://127.0.0.1:8080 'sum by (source) (rate(http_request_duration_ms_count[5m]))'
                    promtool query range --start \$(date -d '-15 min' +%s) --end \$(date +%s) --step 1m \\
                      http://127.0.0.1:8080 'max by (source) (http_request_duration_ms{quantile="0.99"})'
                    curl -s 'http://127.0.0.1:8080/api/v1/timeseries?metric=http_request_duration_ms&stat=count,p99&step=5m&group_by=source'
  Speed layer       http://127.0.0.1:9101/metrics   (strata_speed_* self-metrics)
  Rollups so far    curl -s 'http://127.0.0.1:18123/' --data-binary "SELECT metric_name, sumMerge(cnt) AS events,
                      round(sumMerge(total) / events, 2) AS avg FROM strata.speed_rollup_1m
                      WHERE metric_name != '' GROUP BY metric_name ORDER BY metric_name"
  Archive (Delta)   $ROOT/.strata/lake/events   (http://127.0.0.1:9102/metrics: strata_archive_*)
  Recomputes        http://127.0.0.1:9103/metrics   (strata_batch_*: every 5 min the latest closed and dirty hours)
                    target/debug/strata-batch status | jobs | recompute --from 2026-11-25T10:00:00Z --to 2026-11-25T12:00:00Z
  Ad hoc SQL        target/debug/strata-batch sql "SELECT metric_name, sum(count) FROM rollup_1h GROUP BY 1"
                    psql -h 127.0.0.1 -p 5433 -U me -d strata -c 'SELECT metric_name, count(*) FROM events GROUP BY 1'
                    $ROOT/.strata/venv/bin/python -c "import adbc_driver_flightsql.dbapi as f; c = f.connect('grpc://127.0.0.1:50051').cursor(); c.execute('SELECT source, count(*) FROM events GROUP BY 1'); print(c.fetch_arrow_table())"
  Producers         Prometheus http://127.0.0.1:9090 scrapes Strata's services and remote-writes to Strata;
                    an OpenTelemetry app (job="checkout") sends OTLP; StatsD on 127.0.0.1:8125. Same PromQL, both:
                    promtool query instant http://127.0.0.1:9090 'sum(rate(strata_serving_ingest_samples_total[5m]))'
                    promtool query instant http://127.0.0.1:8080 'sum(rate(strata_serving_ingest_samples_total[5m]))'
                    promtool query instant http://127.0.0.1:8080 'histogram_quantile(0.95, sum by (le) (rate(checkout_latency_milliseconds_bucket[5m])))'
  Alerting          vmalert http://127.0.0.1:8880 evaluates infra/alerting/rules/ against Strata; alerts in
                    Alertmanager http://127.0.0.1:9093 (UI), curl -s http://127.0.0.1:9093/api/v2/alerts
                    rules and alerts through Strata: curl -s http://127.0.0.1:8080/api/v1/rules | /api/v1/alerts
                    try one: pkill -f 'strata-speed run' → StrataSpeedNotReporting fires in ≈ 3 min; make run restarts it
  Dead letters      target/debug/strata-batch dead-letters list   (kept in the lake's dead_letters table; replay after a fix)
  S3 (SeaweedFS)    http://127.0.0.1:8333  (key/secret minioadmin)
  What runs         make status
  Stop              make stop   (services)   |   make down   (everything)
TXT
