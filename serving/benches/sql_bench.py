"""make bench-sql's clients: one large result fetched over HTTP JSON (urllib + json), the
PostgreSQL protocol (psycopg) and Arrow Flight SQL (ADBC), as a notebook user would. Driven by
serving/benches/sql.rs.

Input (stdin, JSON): {"http": url, "pg_port": N, "flight_port": N, "sql": str, "repeat": N}
Output (stdout, JSON): {"rows": {client: n}, "ms": {client: [ms, ...]}}
"""

import json
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight
import psycopg


def over_http(cfg):
    body = json.dumps({"sql": cfg["sql"], "format": "json"}).encode()
    req = urllib.request.Request(
        cfg["http"] + "/api/v1/sql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        answer = json.load(r)
    return len(answer["data"]["rows"])


def over_pg(cfg):
    with psycopg.connect(
        host="127.0.0.1", port=cfg["pg_port"], user="bench", dbname="strata", autocommit=True
    ) as conn:
        return len(conn.execute(cfg["sql"]).fetchall())


def over_flight(cfg):
    with flight.connect(f"grpc://127.0.0.1:{cfg['flight_port']}") as conn:
        with conn.cursor() as cur:
            cur.execute(cfg["sql"])
            return cur.fetch_arrow_table().num_rows


def main():
    cfg = json.load(sys.stdin)
    clients = {"http": over_http, "pg": over_pg, "flight": over_flight}
    rows = {name: 0 for name in clients}
    ms = {name: [] for name in clients}
    # Interleaved, so a slow moment of the machine falls on every client alike.
    for _ in range(cfg.get("repeat", 3)):
        for name, fetch in clients.items():
            started = time.perf_counter()
            rows[name] = fetch(cfg)
            ms[name].append((time.perf_counter() - started) * 1000.0)
    json.dump({"rows": rows, "ms": ms}, sys.stdout)


if __name__ == "__main__":
    main()
