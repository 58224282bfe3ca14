"""A StatsD-instrumented app (PyPI `statsd`), for Strata's tests.

    statsd_app.py HOST UDP_PORT TCP_PORT

Sends known counters, gauges, timings and sets over UDP and a counter over TCP and prints a
JSON object of what a reader should find through Strata's PromQL API.
"""

import json
import sys
import time

import statsd


def main():
    host, udp, tcp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    u = statsd.StatsClient(host, udp, prefix="shop")
    for _ in range(10):
        u.incr("checkout")           # 10
    u.incr("checkout", 5)            # 15
    u.gauge("stock", 40)
    u.gauge("stock", -3, delta=True)  # 37
    for ms in (10, 20, 30, 40):
        u.timing("render", ms)
    for user in ("ann", "bob", "ann", "cy"):
        u.set("visitors", user)      # 3 distinct
    with u.pipeline() as p:
        p.incr("pipelined", 2)
        p.incr("pipelined", 3)       # 5
    t = statsd.TCPStatsClient(host, tcp, prefix="shop")
    t.connect()
    t.incr("tcp_orders", 4)
    t.incr("tcp_orders", 6)          # 10
    t.close()
    time.sleep(0.2)
    print(json.dumps({"checkout": 15, "stock": 37, "render": {"count": 4, "sum": 100},
                      "visitors": 3, "pipelined": 5, "tcp_orders": 10}), flush=True)


if __name__ == "__main__":
    main()
