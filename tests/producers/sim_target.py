"""A prometheus-client app that changes its values once a minute, for Strata's receiver tests.

    sim_target.py PORT START_MS MINUTES

From START_MS (a whole minute) on, minute k's samples are shown timestamped START_MS + k min +
0.5 s however often it is scraped (Prometheus keeps the timestamps: honor_timestamps, and one
timestamp is one sample), for MINUTES minutes; then the last minute stays. A counter with a
reset, a gauge and a classic histogram, so that a real Prometheus holds one sample per series
and minute — Strata's resolution — and both can be asked the same PromQL. The values are
random; the comparison needs no ground truth of its own.
"""

import random
import sys
import threading
import time

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

BOUNDS = ["0.1", "0.5", "1.0", "+Inf"]


class Simulated(Collector):
    def __init__(self, start_ms: int, minutes: int):
        self.start_ms = start_ms
        self.minutes = minutes
        self.k = -1
        self.lock = threading.Lock()
        self.rng = random.Random(7)
        self.requests = {("/a", "200"): 0.0, ("/a", "500"): 0.0, ("/b", "200"): 0.0}
        self.temperature = {"kitchen": 21.0, "cellar": 12.0}
        self.buckets = {"/a": [0, 0, 0, 0], "/b": [0, 0, 0, 0]}
        self.sums = {"/a": 0.0, "/b": 0.0}

    def step(self):
        self.k += 1
        for key in self.requests:
            self.requests[key] += self.rng.randint(0, 120)
        if self.k == self.minutes // 2:
            self.requests[("/b", "200")] = float(self.rng.randint(0, 5))  # a restart: a reset
        for room in self.temperature:
            self.temperature[room] += self.rng.uniform(-1.5, 1.5)
        for route, counts in self.buckets.items():
            for _ in range(self.rng.randint(5, 40)):
                v = self.rng.expovariate(1 / (0.3 if route == "/a" else 0.8))
                self.sums[route] += v
                for i, b in enumerate(BOUNDS):
                    if b == "+Inf" or v <= float(b):
                        counts[i] += 1

    def collect(self):
        with self.lock:
            now_k = min((int(time.time() * 1000) - self.start_ms) // 60_000, self.minutes - 1)
            if now_k < 0:
                return
            while self.k < now_k:
                self.step()
            ts = (self.start_ms + self.k * 60_000 + 500) / 1000.0
            c = CounterMetricFamily("app_requests", "Requests served.", labels=["route", "code"])
            for (route, code), v in self.requests.items():
                c.add_metric([route, code], v, timestamp=ts)
            g = GaugeMetricFamily("app_temperature_celsius", "Room temperature.", labels=["room"])
            for room, v in self.temperature.items():
                g.add_metric([room], v, timestamp=ts)
            h = HistogramMetricFamily("app_latency_seconds", "Request latency.", labels=["route"])
            for route, counts in self.buckets.items():
                h.add_metric([route], list(zip(BOUNDS, counts)), self.sums[route], timestamp=ts)
        yield c
        yield g
        yield h


def main():
    port, start_ms, minutes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    REGISTRY.register(Simulated(start_ms, minutes))
    start_http_server(port, addr="127.0.0.1")
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
