"""The schema of every table the project writes, in one place: versions' rows, their side tables, work files.

Stages import their tables from here; a reader (training, evaluation, a notebook) finds what it reads here too.
Changing a schema changes the bytes of the versions written with it.
"""

from __future__ import annotations

import pyarrow as pa

# ``corpus/{source}`` rows: one univariate series per row, whatever source it came from.
CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("freq", pa.string()),
        pa.field("start", pa.timestamp("us")),
        pa.field("target", pa.large_list(pa.float32()), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("attributes", pa.string()),  # JSON of source-specific attributes (tsf header columns, kernel)
    ]
)

# ``kernelsynth`` rows: canonical series plus the kernel expression each was drawn from.
KERNELSYNTH_SCHEMA = CANONICAL_SCHEMA.append(pa.field("kernel", pa.string(), nullable=False))

# Ingest's ``quarantine`` side table: a series that did not enter the corpus, why, and its values.
INGEST_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("input", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("length", pa.int64()),
        pa.field("target", pa.large_list(pa.float32())),
    ]
)

# Ingest's ``duplicates`` side table: a series dropped because an earlier one has the same values.
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("content_hash", pa.string()),
    ]
)

# An ingest work unit's file: canonical columns (nullable, empty for quarantined rows) plus why and where from.
INGEST_UNIT_SCHEMA = pa.schema(
    [pa.field(f.name, f.type) for f in CANONICAL_SCHEMA]
    + [pa.field("reason", pa.string()), pa.field("input", pa.string()), pa.field("missing", pa.int64())]
)

# ``training_corpus`` rows (BLAST's output, pretraining's input): one fixed-length sample per row.
TRAINING_CORPUS_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("source_series_ids", pa.list_(pa.string()), nullable=False),
        pa.field("grid_cell", pa.int32(), nullable=False),
        pa.field("values", pa.list_(pa.float32()), nullable=False),
    ]
)

# BLAST's ``quarantine`` side table: an input series that could not be scored, and why (no values kept).
BLAST_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("input", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("length", pa.int64()),
    ]
)
