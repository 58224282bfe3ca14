"""Replays statements recorded from Strata against a current ClickHouse engine, in-process (chdb).

Input (JSON file, argv[1]): {"dir": session folder, "statements": [{"database": …, "settings":
{…}, "sql": …, "data": RowBinary file or null, "columns": [[name, type], …] or null}]}.
Output (stdout, JSON): one {"ok": bool, "tsv": answer, "error": message} per statement.

An INSERT … FORMAT RowBinary statement comes with its rows in a file (the body Strata sent,
decompressed); it is run as INSERT … SELECT * FROM file(…, RowBinary, <its columns>), which goes
through the same table and materialized view. A SELECT runs with FORMAT TSV in place of the
client's format, so its answer can be compared with the other server's.
"""
import json
import re
import sys

from chdb import session

# Settings a client sends per request that mean something to a statement's outcome.
KEPT_SETTINGS = {"max_execution_time", "query_id"}


def main():
    spec = json.load(open(sys.argv[1]))
    s = session.Session(spec["dir"])
    out = []
    for st in spec["statements"]:
        try:
            db = st.get("database")
            if db:
                s.query(f"CREATE DATABASE IF NOT EXISTS `{db}`")
                s.query(f"USE `{db}`")
            settings = ", ".join(
                f"{k} = {v!r}" if not str(v).isdigit() else f"{k} = {v}"
                for k, v in st.get("settings", {}).items()
                if k in KEPT_SETTINGS and k != "query_id"
            )
            sql = st["sql"].strip().rstrip(";")
            if st.get("data"):
                m = re.match(r"(?is)^INSERT INTO\s+(\S+?)\s*\((.*?)\)\s*FORMAT\s+RowBinary\s*$", sql)
                if not m:
                    raise ValueError(f"an INSERT with rows that is not FORMAT RowBinary: {sql}")
                table, cols = m.group(1), m.group(2)
                structure = ", ".join(f"{n} {t}" for n, t in st["columns"])
                sql = (
                    f"INSERT INTO {table} ({cols}) SELECT * FROM "
                    f"file('{st['data']}', 'RowBinary', '{structure}')"
                )
                s.query(sql)
                out.append({"ok": True, "tsv": "", "error": ""})
                continue
            sql = re.sub(r"(?is)\s+FORMAT\s+\w+\s*$", "", sql)
            is_select = re.match(r"(?is)^\s*(SELECT|WITH)\b", sql) is not None
            if settings:
                sql += f" SETTINGS {settings}"
            if is_select:
                res = s.query(sql + " FORMAT TSV")
                out.append({"ok": True, "tsv": res.bytes().decode(), "error": ""})
            else:
                s.query(sql)
                out.append({"ok": True, "tsv": "", "error": ""})
        except Exception as e:  # the statement's own failure is the finding
            out.append({"ok": False, "tsv": "", "error": str(e)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
