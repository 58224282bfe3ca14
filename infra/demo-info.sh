#!/usr/bin/env bash
# Printed at the end of `make demo`: where to look while the pipeline runs.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cat <<TXT

Strata demo is running: strata-gen produces ~2000 events/s (live timestamps, with a few duplicates,
late and malformed messages) to topic metrics-events on 127.0.0.1:9092.

  Generator log     $ROOT/.strata/logs/gen.log
  Service logs      $ROOT/.strata/logs/
  Kafka topics      .strata/bin/tansu topic list --broker tcp://127.0.0.1:9092
  ClickHouse        curl 'http://127.0.0.1:18123/?query=SHOW+DATABASES'
  S3 (SeaweedFS)    http://127.0.0.1:8333  (key/secret minioadmin)
  What runs         make status
  Stop              make stop   (services)   |   make down   (everything)
TXT
