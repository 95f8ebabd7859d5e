"""The human-readable card (``README.md``) written beside every dataset version's data folder.

Why a card: a version is meant to be opened by whatever tool a user has at hand, months later, without this
project installed; the card says what the rows are, where they came from, and the exact line that loads them
in each common tool, with the version's own URL filled in.
"""

from __future__ import annotations

from typing import Any

LOADERS = (
    ("polars", "import polars as pl\npl.scan_parquet({url!r}{polars}).collect()"),
    ("pyarrow", "import pyarrow.dataset as ds\nds.dataset({url!r}, format=\"parquet\").to_table()"),
    ("pandas", "import pandas as pd\npd.read_parquet({url!r}{fsspec})"),
    ("Ray Data", "import ray\nray.data.read_parquet({url!r})"),
    ("DuckDB", "import duckdb\nduckdb.sql(\"SELECT * FROM read_parquet('{url}*.parquet')\")"),
    ("Hugging Face datasets", "from datasets import load_dataset\n"
                              "load_dataset(\"parquet\", data_files={glob!r}{fsspec}, split=\"train\")"),
    ("FactoST", "from infra.versions import open_version, read_table\n"
                "read_table(open_version({url!r}, verify=True))"),
)


def _remote_notes(url: str) -> tuple[str, str, str]:
    """Extra arguments and a note for a remote URL; credentials always come from the standard chain."""
    if "://" not in url:
        return "", "", ""
    note = ("Credentials come from the standard chain (environment, shared credentials file, instance role); "
            "a custom endpoint is `AWS_ENDPOINT_URL` for polars, pyarrow and Ray, `client_kwargs` / `endpoint_url` "
            "in `storage_options` for pandas and datasets, and a registered fsspec filesystem "
            "(`duckdb.register_filesystem(s3fs.S3FileSystem())`) for DuckDB.\n\n")
    return ", storage_options={...}", ", storage_options={...}", note


def _lineage(manifest: dict[str, Any]) -> list[str]:
    lines = []
    for item in manifest.get("inputs", []):
        if "version_id" in item:
            lines.append(f"- version `{item['version_id']}` of `{item.get('dataset', '?')}` ({item.get('url', '')})")
        else:
            lines.append(f"- `{item.get('path', '?')}`: {item.get('bytes', '?')} bytes, sha256 `{item.get('sha256')}`")
    return lines or ["- no inputs (generated from its config alone)"]


def version_card(manifest: dict[str, Any], url: str) -> str:
    """Markdown card of a version from its manifest; ``url`` is the data folder readers are given."""
    polars, fsspec, note = _remote_notes(url)
    schema = "\n".join(f"| `{c['name']}` | `{c['type']}` |" for c in manifest["schema"])
    extras = {**{f"{k} (side table)": v for k, v in manifest.get("side_tables", {}).items()},
              **manifest.get("files", {})}
    extra_rows = "\n".join(f"| {name} | {e.get('file', name)} | {e['bytes']:,} |" for name, e in extras.items())
    loaders = "\n\n".join(
        f"{tool}:\n\n```python\n{code.format(url=url, glob=url + '*.parquet', polars=polars, fsspec=fsspec)}\n```"
        for tool, code in LOADERS
    )
    return (
        f"# {manifest['dataset']} version {manifest['version_id']}\n\n"
        f"Published {manifest['created_at']}: {manifest['rows']:,} rows in {len(manifest['parts'])} Parquet "
        f"part(s), {manifest['bytes']:,} bytes.\n\nData folder (the version's URL): `{url}`\n\n"
        "The data folder holds only the parts; this card, the side tables and plots sit one level up, and "
        "`_manifest.json` (sizes and sha256 of every file, the config, the inputs) two levels up. Check the "
        "files against it with `factost verify URL`.\n\n"
        f"## Schema\n\n| column | type |\n|---|---|\n{schema}\n\n"
        f"## Lineage\n\n" + "\n".join(_lineage(manifest)) + "\n\n"
        f"Code version `{manifest['code_version']}`, git commit `{manifest.get('git_commit')}`.\n\n"
        + (f"## Beside the data\n\n| name | file | bytes |\n|---|---|---|\n{extra_rows}\n\n" if extras else "")
        + f"## Load it\n\n{note}{loaders}\n"
    )
