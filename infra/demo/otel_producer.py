"""`make demo`'s OpenTelemetry-instrumented producer: a pretend checkout service exporting
over OTLP/HTTP every 10 s to OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (default strata-serving's
http://127.0.0.1:8080/v1/metrics).

In Strata (job="checkout"): checkout_orders_total{region} (a counter), checkout_latency_milliseconds
_bucket/_count/_sum (a histogram), checkout_queue_depth (a gauge), e.g.
    histogram_quantile(0.95, sum by (le) (rate(checkout_latency_milliseconds_bucket[5m])))
"""

import os
import random
import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def main():
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:8080/v1/metrics")
    headers = {}
    if os.environ.get("STRATA_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["STRATA_TOKEN"]
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, headers=headers),
                                           export_interval_millis=10_000)
    view = View(instrument_name="checkout.latency",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=[10, 25, 50, 100, 250, 500, 1000]))
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout", "service.instance.id": "demo-1"}),
                             metric_readers=[reader], views=[view])
    meter = provider.get_meter("strata.demo")
    orders = meter.create_counter("checkout.orders", description="Orders placed")
    latency = meter.create_histogram("checkout.latency", unit="ms", description="Checkout latency")
    depth = {"v": 0}
    meter.create_observable_gauge("checkout.queue_depth", callbacks=[lambda _o: [Observation(depth["v"])]])
    rng = random.Random()
    while True:
        for _ in range(rng.randint(5, 20)):
            orders.add(1, {"region": rng.choice(["eu", "us", "apac"])})
            latency.record(rng.lognormvariate(4.0, 0.6))
        depth["v"] = max(0, depth["v"] + rng.randint(-3, 3))
        time.sleep(1)


if __name__ == "__main__":
    main()
