"""Reads a replayfleet target as Delta readers do, with no replayfleet code.

    delta_read.py versions URI     every version 0..current: rows by deltalake and by polars
    delta_read.py types URI        the column types of the current version as Delta, deltalake
                                   and polars see them, its row count and first row
    delta_read.py loop URI STOP    the current version, again and again until STOP exists:
                                   one JSON line per read (version, rows)

Storage options (S3 endpoint, credentials) come as JSON in $DELTA_STORAGE_OPTIONS. Rows are
printed as JSON objects, sorted, values as JSON or their str().
"""

import json
import os
import sys
import time

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError


def options():
    return json.loads(os.environ.get("DELTA_STORAGE_OPTIONS", "{}"))


def canonical(rows):
    return sorted(json.dumps(r, sort_keys=True, default=str, separators=(",", ":")) for r in rows)


def deltalake_rows(uri, version=None):
    dt = DeltaTable(uri, storage_options=options())
    if version is not None:
        dt.load_as_version(version)
    return dt.version(), canonical(dt.to_pyarrow_table().to_pylist())


def polars_rows(uri, version):
    import polars as pl

    frame = pl.read_delta(uri, version=version, storage_options=options())
    return canonical(frame.to_dicts())


def duckdb_rows(uri, version):
    """DuckDB over the files deltalake names (local folders: DuckDB reads S3 only with an
    extension it downloads)."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    try:
        import duckdb
    except ImportError:
        return None
    files = DeltaTable(uri, version=version, storage_options=options()).file_uris()
    if not files:
        return []
    rel = duckdb.sql(f"SELECT * FROM read_parquet({files})")
    return canonical(dict(zip(rel.columns, row)) for row in rel.fetchall())


def versions(uri):
    current, current_rows = deltalake_rows(uri)
    history = DeltaTable(uri, storage_options=options()).history()
    out = {
        "current": current,
        "current_rows": current_rows,
        "versions": {},
        # commitInfo per version, newest first: replayfleet's record rides in it
        "history": [[h.get("version"), h.get("operation"), (h.get("replayfleet") or {}).get("run_id")]
                    for h in history],
    }
    for v in range(0, current + 1):
        _, rows = deltalake_rows(uri, v)
        dt = DeltaTable(uri, storage_options=options())
        dt.load_as_version(v)
        out["versions"][str(v)] = {
            "deltalake": rows,
            "polars": polars_rows(uri, v),
            "duckdb": duckdb_rows(uri, v),
            "columns": [f.name for f in dt.schema().fields],
        }
    print(json.dumps(out))


def types(uri):
    import polars as pl

    dt = DeltaTable(uri, storage_options=options())
    table = dt.to_pyarrow_table()
    frame = pl.read_delta(uri, storage_options=options())
    print(json.dumps({
        "protocol": [dt.protocol().min_reader_version, dt.protocol().min_writer_version],
        "delta": {f.name: str(f.type) for f in dt.schema().fields},
        "deltalake": {f.name: str(f.type) for f in table.schema},
        "polars": {name: str(dtype) for name, dtype in frame.schema.items()},
        "rows": [table.num_rows, frame.height],
        "first": canonical(frame.sort("account_id").head(1).to_dicts()),
    }))


def loop(uri, stop):
    print("ready", flush=True)
    last = False
    while not last:
        last = os.path.exists(stop)  # one read more once told to stop
        try:
            version, rows = deltalake_rows(uri)
        except TableNotFoundError:  # no version committed yet
            time.sleep(0.01)
            continue
        print(json.dumps({"version": version, "rows": rows}), flush=True)
    # Skip the interpreter's shutdown: a native library's threads torn down then have
    # aborted the process ("terminate called without an active exception") under load.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "versions":
        versions(sys.argv[2])
    elif sys.argv[1] == "types":
        types(sys.argv[2])
    elif sys.argv[1] == "loop":
        loop(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
