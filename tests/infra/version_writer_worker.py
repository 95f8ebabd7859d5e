"""One writer process of the concurrency tests: publishes a fixed version slowly and reports what it saw.

Run as ``python -m tests.infra.version_writer_worker ROOT VERSION_ID START_DELAY PART_DELAY OPTIONS_JSON``;
prints one JSON line: whether this process published, the URL it reports, and when it started and ended.
"""

from __future__ import annotations

import json
import sys
import time

import pyarrow as pa

from infra.versions import VersionWriter

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64())])
PARTS = 8
ROWS_PER_PART = 500


def expected_ids() -> list[int]:
    return list(range(PARTS * ROWS_PER_PART))


def main(root: str, version_id: str, start_delay: float, part_delay: float, options: dict) -> None:
    time.sleep(start_delay)
    started = time.time()
    writer = VersionWriter(root, "concurrent", version_id, SCHEMA, options or None, part_max_rows=ROWS_PER_PART)
    print(json.dumps({"attempt": writer.attempt}), flush=True)
    for part in range(PARTS):
        ids = list(range(part * ROWS_PER_PART, (part + 1) * ROWS_PER_PART))
        writer.write(pa.table({"id": ids, "value": [i * 0.5 for i in ids]}, schema=SCHEMA))
        time.sleep(part_delay)
    version = writer.commit(config={"parts": PARTS}, inputs=[], code_version="test")
    print(json.dumps({"published": writer.published, "url": version.url, "start": started, "end": time.time()}),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5]))
