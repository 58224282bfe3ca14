"""SQL over the archive through clients none of us wrote: psycopg (PostgreSQL protocol) and
ADBC's Flight SQL driver (Arrow Flight SQL). Driven by serving/tests/integration/sql_clients.rs.

Input (stdin, JSON): {"pg_port": N, "flight_port": N, "token": str|null, "auth": "bearer"|"handshake",
                      "queries": [sql, ...], "cancel": sql|null, "tables": bool}
Output (stdout, JSON): {"psycopg": [result, ...], "adbc": [result, ...], "tables": {...}, "cancel": {...}}
where a result is {"rows": [[cell, ...], ...]} (cells as text, None as "") or {"error": message}.
"""

import json
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight
import psycopg
from adbc_driver_flightsql import DatabaseOptions


def cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def rows_of(cursor):
    return [[cell(v) for v in row] for row in cursor.fetchall()]


def pg_connect(cfg):
    return psycopg.connect(
        host="127.0.0.1",
        port=cfg["pg_port"],
        user="jupyter",
        password=cfg.get("token") or "",
        dbname="strata",
        connect_timeout=10,
        autocommit=True,
    )


def flight_connect(cfg):
    kwargs = {}
    token = cfg.get("token")
    if token and cfg.get("auth", "bearer") == "bearer":
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    elif token:
        kwargs["username"] = "jupyter"
        kwargs["password"] = token
    return flight.connect(f"grpc://127.0.0.1:{cfg['flight_port']}", db_kwargs=kwargs)


def run_all(connect, queries):
    out = []
    try:
        conn = connect()
    except Exception as e:  # the connection itself refused (e.g. a wrong token)
        return [{"error": f"connect: {e}"} for _ in queries]
    with conn:
        for sql in queries:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    out.append({"rows": rows_of(cur)})
            except Exception as e:
                out.append({"error": str(e)})
                if isinstance(conn, psycopg.Connection) and conn.broken:
                    conn = connect()
    return out


def cancel_pg(cfg, sql):
    """Starts `sql`, cancels it after 0.5 s from another thread; says what the client saw."""
    with pg_connect(cfg) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        started = time.monotonic()
        timer.start()
        try:
            conn.execute(sql).fetchall()
            return {"error": None, "seconds": time.monotonic() - started}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - started}
        finally:
            timer.cancel()


def cancel_adbc(cfg, sql):
    """The same through ADBC: the statement is cancelled from another thread while it streams."""
    with flight_connect(cfg) as conn:
        with conn.cursor() as cur:
            started = time.monotonic()
            timer = threading.Timer(0.5, cur.adbc_cancel)
            timer.start()
            try:
                cur.execute(sql)
                cur.fetchall()
                return {"error": None, "seconds": time.monotonic() - started}
            except Exception as e:
                return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - started}
            finally:
                timer.cancel()


def tables_seen(cfg):
    """What a tool browsing the catalog sees: ADBC's get_objects and psycopg's information_schema."""
    with flight_connect(cfg) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        adbc = sorted(
            t["table_name"]
            for c in objects
            for s in (c["catalog_db_schemas"] or [])
            for t in (s["db_schema_tables"] or [])
        )
        schema = conn.adbc_get_table_schema("events")
        adbc_columns = [f.name for f in schema]
    with pg_connect(cfg) as conn:
        pg = sorted(
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        )
    return {"adbc": adbc, "adbc_events_columns": adbc_columns, "psycopg": pg}


def main():
    cfg = json.load(sys.stdin)
    queries = cfg.get("queries", [])
    out = {
        "psycopg": run_all(lambda: pg_connect(cfg), queries),
        "adbc": run_all(lambda: flight_connect(cfg), queries),
    }
    if cfg.get("tables"):
        out["tables"] = tables_seen(cfg)
    if cfg.get("cancel"):
        out["cancel"] = {
            "psycopg": cancel_pg(cfg, cfg["cancel"]),
            "adbc": cancel_adbc(cfg, cfg["cancel"]),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
