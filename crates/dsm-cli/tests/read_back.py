"""Reads a file `dsm fetch` wrote (Parquet, Arrow IPC or CSV) with pyarrow, as a user would, and
prints its row count and distinct `source` values as JSON. Used by the CLI tests."""
import json
import sys

import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet

path = sys.argv[1]
if path.endswith(".parquet"):
    table = pyarrow.parquet.read_table(path)
elif path.endswith(".arrow"):
    with pyarrow.ipc.open_file(path) as reader:
        table = reader.read_all()
elif path.endswith(".csv"):
    table = pyarrow.csv.read_csv(path)
else:
    sys.exit(f"unknown format: {path}")
sources = sorted({str(s) for s in table.column("source").to_pylist()})
print(json.dumps({"rows": table.num_rows, "sources": sources}))
