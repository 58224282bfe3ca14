"""An OpenTelemetry-instrumented app exporting over OTLP/HTTP (protobuf), for Strata's tests.

    otel_app.py ENDPOINT TEMPORALITY    (TEMPORALITY: cumulative | delta)

Records known values in two rounds, each ended by a forced export, and prints a JSON object of
what a reader should find: the test asks Strata's PromQL API for the same numbers.
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def main():
    endpoint, temporality = sys.argv[1], sys.argv[2]
    kind = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(
        endpoint=endpoint,
        preferred_temporality={Counter: kind, Histogram: kind, UpDownCounter: AggregationTemporality.CUMULATIVE},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": f"shop-{temporality}", "service.instance.id": "i-1",
                                "deployment.environment": "test"})
    # Buckets (-inf, 10], (10, 100], (100, +inf) instead of the SDK's default bounds.
    buckets = View(instrument_name="shop.latency",
                   aggregation=ExplicitBucketHistogramAggregation(boundaries=[10.0, 100.0]))
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[buckets])
    meter = provider.get_meter("strata.test")
    orders = meter.create_counter("shop.orders", unit="1", description="Orders placed")
    latency = meter.create_histogram("shop.latency", unit="ms", description="Checkout latency")
    queue = meter.create_up_down_counter("shop.queue", description="Orders waiting")
    temperature = {"v": 20.5}
    meter.create_observable_gauge(
        "shop.temperature", unit="Cel",
        callbacks=[lambda _options: [Observation(temperature["v"], {"room": "store"})]],
    )

    orders.add(3, {"region": "eu"})
    orders.add(4, {"region": "us"})
    for v in (5, 50, 500):
        latency.record(v, {"route": "/pay"})
    queue.add(7)
    ok1 = reader.force_flush(timeout_millis=30_000)
    orders.add(10, {"region": "eu"})
    latency.record(20, {"route": "/pay"})
    queue.add(-2)
    temperature["v"] = 22.0
    ok2 = reader.force_flush(timeout_millis=30_000)
    provider.shutdown()
    print(json.dumps({"exported": bool(ok1 and ok2),
                      "orders": {"eu": 13, "us": 4},
                      "latency": {"count": 4, "sum": 575, "le": {"10": 1, "100": 3, "+Inf": 4}},
                      "queue": 5, "temperature": 22.0}), flush=True)


if __name__ == "__main__":
    main()
