"""Named benchmarks, their conventions and where their files are, and :func:`resolve_benchmark`.

Conventions per benchmark (docs/design.md, "STA adaptation"; the paper does not state splits):

- traffic (PEMS03/04/07/08 flow, METR-LA and PEMS-BAY speed, los-loop speed): 6:2:2 in time, zeros are
  missing readings, one global z-score. DCRNN itself split METR-LA / PEMS-BAY 7:1:2; the
  public STA code uses 6:2:2 for all traffic, and so do we.
- ETTh1/h2: 12/4/4 months of 30 days (``12*30*24`` hourly rows train, ``4*30*24`` val and test); ETTm1/m2
  the same months at 15 minutes. NaN is missing; one z-score per variable (LTSF ``StandardScaler``).
- Electricity, Weather, Exchange-rate: 7:1:2, NaN missing, per-variable z-score.

PEMS npz files carry no timestamps; ``start`` is the first day given in the STSGCN paper's dataset table
(the files cover whole days from midnight), so the calendar features follow the real week. los-loop has no
timestamps and no recorded start: its calendar is index-based (see :mod:`adaptation.datasets.calendar`).

Checksums are recorded only where they are known from the files' provenance; ``None`` means the first
download records what it saw (see :mod:`adaptation.datasets.downloads`).
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adaptation.datasets.dataset import SpatioTemporalDataset
from adaptation.datasets.downloads import DownloadSpec, download
from adaptation.datasets.loaders import (
    load_dcrnn_h5,
    load_generic,
    load_ltsf_csv,
    load_matrix_csv,
    load_pems_npz,
)
from adaptation.datasets.splits import NullValue, SplitRule, parse_split
from adaptation.datasets.synthetic import SYNTHETIC_PREFIX, make_synthetic_benchmark
from infra.storage import filesystem, join

DATA_DIR_ENV = "FACTOST_DATA_DIR"
DEFAULT_DATA_DIR = "data"
GENERIC_SUFFIXES = (".csv", ".csv.gz", ".npz", ".parquet", ".pq", ".h5", ".hdf5")
SEARCH_DEPTH = 3  # data_dir/<a>/<b>/<file>: e.g. BasicTS's raw_data/PEMS08/PEMS08.npz

ETT_COMMIT = "1d16c8f4f943005d613b5bc962e9eeb06058cf07"
TGCN_COMMIT = "219a2346f5bf68d54d91a948e7a41a08f9edc46b"
ETT_URL = f"https://raw.githubusercontent.com/zhouhaoyi/ETDataset/{ETT_COMMIT}/ETT-small/{{}}"
TGCN_URL = f"https://raw.githubusercontent.com/lehaifeng/T-GCN/{TGCN_COMMIT}/data/{{}}"
DCRNN_GRAPH_URL = "https://raw.githubusercontent.com/liyaguang/DCRNN/master/data/sensor_graph/{}"
PEMS_NOTE = ("PEMS0X npz + distance csv are distributed by the STSGCN/ASTGNN authors and BasicTS "
             "(cloud-drive links in their READMEs), not at a stable direct URL.")
DCRNN_H5_NOTE = "METR-LA / PEMS-BAY .h5 files are linked from the DCRNN README (Google Drive / Baidu)."
LTSF_NOTE = "The LTSF csv files are in the Autoformer authors' shared drive (see the Autoformer README)."


class BenchmarkSpec(BaseModel):
    """A named benchmark: accepted file names (first = standard), format and evaluation conventions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    format: Literal["pems_npz", "dcrnn_h5", "ltsf_csv", "matrix_csv"]
    data_files: tuple[str, ...]
    graph_files: tuple[str, ...] = ()
    id_files: tuple[str, ...] = ()
    h5_key: str | None = None
    target: str
    num_nodes: int = Field(gt=0)
    num_steps: int | None = None
    freq: str
    start: str | None = None
    null_value: NullValue
    split: str
    scaler_per_node: bool
    downloads: tuple[DownloadSpec, ...] = ()
    description: str = ""
    aliases: tuple[str, ...] = Field(
        (), description="Names of this same data in other archives (LOTSA, LibCity, Monash): a corpus source so "
        "named is this benchmark's dataset (see corpus.leakage); a name another dataset shares is left out",
    )


def _pems(number: str, nodes: int, steps: int, start: str) -> BenchmarkSpec:
    stem = f"PEMS{number}"
    return BenchmarkSpec(
        name=f"pems{number}", format="pems_npz", data_files=(f"{stem}.npz",),
        graph_files=(f"{stem}.csv", f"{stem}_distance.csv", f"{stem}_distance_matrix.csv"),
        id_files=(f"{stem}.txt",) if number == "03" else (), target="flow", num_nodes=nodes, num_steps=steps,
        freq="5min", start=start, null_value="zero", split="6:2:2", scaler_per_node=False,
        downloads=(DownloadSpec(filename=f"{stem}.npz", note=PEMS_NOTE),
                   DownloadSpec(filename=f"{stem}.csv", note=PEMS_NOTE)),
        description=f"Caltrans PeMS district {number.lstrip('0')} traffic flow, 5 min, {nodes} sensors",
        # PeMSD7 also names STGCN's other 228-sensor district-7 set, so it is not an alias of pems07
        aliases=(stem,) if number == "07" else (stem, f"PEMSD{number.lstrip('0')}"),
    )


def _ett(stem: str, freq: str, steps: int) -> BenchmarkSpec:
    sha = {"ETTh2.csv": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b"}
    filename = f"{stem}.csv"
    return BenchmarkSpec(
        name=stem.lower(), format="ltsf_csv", data_files=(filename,), target="transformer load and oil temp",
        num_nodes=7, num_steps=steps, freq=freq, null_value="nan", split="months:12/4/4", scaler_per_node=True,
        downloads=(DownloadSpec(filename=filename, url=ETT_URL.format(filename), sha256=sha.get(filename)),),
        description=f"Electricity Transformer Temperature {stem}, 7 variables",
        aliases=(stem,),
    )


def _ltsf(
    name: str, filename: str, nodes: int, steps: int, freq: str, note: str = "", aliases: tuple[str, ...] = ()
) -> BenchmarkSpec:
    return BenchmarkSpec(
        name=name, format="ltsf_csv", data_files=(filename,), target=name, num_nodes=nodes, num_steps=steps,
        freq=freq, null_value="nan", split="7:1:2", scaler_per_node=True,
        downloads=(DownloadSpec(filename=filename, note=LTSF_NOTE),),
        description=f"LTSF benchmark {name}" + (f"; {note}" if note else ""),
        aliases=aliases,
    )


# The field scores Weather with its -9999 sensor-fault sentinels as ordinary values (only NaN is missing in
# the LTSF code); masking them would make our numbers incomparable with every published table.
WEATHER_NOTE = "the -9999 sentinels in wv / max. wv stay values, as in the LTSF papers' protocol"


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        _pems("03", 358, 26208, "2018-09-01"),
        _pems("04", 307, 16992, "2018-01-01"),
        _pems("07", 883, 28224, "2017-05-01"),
        _pems("08", 170, 17856, "2016-07-01"),
        BenchmarkSpec(
            name="metr-la", format="dcrnn_h5", data_files=("metr-la.h5", "metr_la.h5"),
            graph_files=("adj_mx.pkl", "adj_mx_la.pkl", "metr_la_adj_mx.pkl"), h5_key="df", target="speed",
            num_nodes=207, num_steps=34272, freq="5min", null_value="zero", split="6:2:2",
            scaler_per_node=False,
            downloads=(DownloadSpec(filename="metr-la.h5", note=DCRNN_H5_NOTE),
                       DownloadSpec(filename="adj_mx.pkl", url=DCRNN_GRAPH_URL.format("adj_mx.pkl"))),
            description="Los Angeles loop-detector speed (DCRNN), 5 min, 207 sensors, from 2012-03-01",
            aliases=("metr-la", "METR_LA"),
        ),
        BenchmarkSpec(
            name="pems-bay", format="dcrnn_h5", data_files=("pems-bay.h5", "pems_bay.h5"),
            graph_files=("adj_mx_bay.pkl", "pems_bay_adj_mx.pkl"), h5_key="speed", target="speed",
            num_nodes=325, num_steps=52116, freq="5min", null_value="zero", split="6:2:2",
            scaler_per_node=False,
            downloads=(DownloadSpec(filename="pems-bay.h5", note=DCRNN_H5_NOTE),
                       DownloadSpec(filename="adj_mx_bay.pkl", url=DCRNN_GRAPH_URL.format("adj_mx_bay.pkl"))),
            description="San Francisco Bay Area speed (DCRNN), 5 min, 325 sensors, from 2017-01-01",
            aliases=("pems-bay", "PEMS_BAY"),
        ),
        _ett("ETTh1", "h", 17420),
        _ett("ETTh2", "h", 17420),
        _ett("ETTm1", "15min", 69680),
        _ett("ETTm2", "15min", 69680),
        # Monash's and LOTSA's electricity_hourly is the same 321 clients; their "weather" is another dataset
        _ltsf("electricity", "electricity.csv", 321, 26304, "h", aliases=("electricity", "electricity_hourly", "ECL")),
        _ltsf("weather", "weather.csv", 21, 52696, "10min", WEATHER_NOTE),
        _ltsf("exchange-rate", "exchange_rate.csv", 8, 7588, "D", aliases=("exchange-rate", "exchange_rate")),
        BenchmarkSpec(
            name="los-loop", format="matrix_csv", data_files=("los_speed.csv",), graph_files=("los_adj.csv",),
            target="speed", num_nodes=207, num_steps=2016, freq="5min", null_value="zero", split="6:2:2",
            scaler_per_node=False,
            downloads=(
                DownloadSpec(filename="los_speed.csv", url=TGCN_URL.format("los_speed.csv"),
                             sha256="7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4"),
                DownloadSpec(filename="los_adj.csv", url=TGCN_URL.format("los_adj.csv"),
                             sha256="7a6eb41e10677992b5af50f5ab187c6c05c5c3a92cb973950cfddbf857361e76"),
            ),
            description="Los-loop (T-GCN): 7 days of METR-LA speed, 5 min, 207 sensors, no timestamps",
            aliases=("los-loop", "LOS_LOOP", "los_speed"),
        ),
    )
}

_ALIASES = {"ecl": "electricity", "exchange": "exchange-rate", "pemsbay": "pems-bay", "metrla": "metr-la",
            "los": "los-loop", "losloop": "los-loop"}


def canonical_name(name: str) -> str:
    """``PEMS-08`` / ``pems_08`` -> ``pems08``; ``METR_LA`` -> ``metr-la``; ``ECL`` -> ``electricity``."""
    text = name.strip().lower().replace("_", "-")
    text = re.sub(r"^pems-?(0\d)$", r"pems\1", text)
    return _ALIASES.get(text.replace("-", ""), _ALIASES.get(text, text))


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[canonical_name(name)]
    except KeyError:
        raise ValueError(
            f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}, synthetic-traffic, synthetic-grid, "
            "or a path to a .csv/.npz/.parquet/.h5 file"
        ) from None


def _listing(data_dir: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Files under ``data_dir`` up to :data:`SEARCH_DEPTH` levels, shallow first, then in name order."""
    fs, root = filesystem(data_dir, storage_options)
    if not fs.isdir(root):
        return []
    found = fs.find(root, maxdepth=SEARCH_DEPTH, withdirs=False)
    prefix = root.rstrip("/") + "/"
    entries = []
    for path in found:
        rel = path[len(prefix):] if path.startswith(prefix) else path
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        entries.append(rel)
    entries.sort(key=lambda rel: (rel.count("/"), rel.lower()))
    return [join(data_dir, *rel.split("/")) for rel in entries]


def _pick(listing: list[str], names: tuple[str, ...], prefer_dir: str | None = None) -> str | None:
    """First listed file named (case-insensitively) like any of ``names``, preferring ``prefer_dir``."""
    wanted = [n.lower() for n in names]
    candidates = [p for p in listing if posixpath.basename(p.replace(os.sep, "/")).lower() in wanted]
    if not candidates:
        return None
    if prefer_dir is not None:
        beside = [p for p in candidates if _dirname(p) == prefer_dir]
        if beside:
            candidates = beside
    candidates.sort(key=lambda p: wanted.index(posixpath.basename(p.replace(os.sep, "/")).lower()))
    return candidates[0]


def _exists(path: str, storage_options: dict[str, Any] | None) -> bool:
    fs, fpath = filesystem(path, storage_options)
    return bool(fs.isfile(fpath))


def _dirname(path: str) -> str:
    return path.replace(os.sep, "/").rsplit("/", 1)[0]


def locate_files(
    spec: BenchmarkSpec, data_dir: str, storage_options: dict[str, Any] | None = None
) -> dict[str, str | None]:
    """Paths of the data, graph and id files of ``spec`` under ``data_dir`` (``None`` where absent)."""
    listing = _listing(data_dir, storage_options)
    data = _pick(listing, spec.data_files)
    where = _dirname(data) if data else None
    graph = _pick(listing, spec.graph_files, where) if spec.graph_files else None
    ids = _pick(listing, spec.id_files, where) if spec.id_files else None
    return {"data": data, "graph": graph, "ids": ids}


def _load_spec(
    spec: BenchmarkSpec,
    files: dict[str, str | None],
    freq: str | None,
    split: str | SplitRule | None,
    storage_options: dict[str, Any] | None,
) -> SpatioTemporalDataset:
    data = files["data"]
    assert data is not None
    split_rule = split if split is not None else spec.split
    common: dict[str, Any] = {"name": spec.name, "split": split_rule, "null_value": spec.null_value,
                              "scaler_per_node": spec.scaler_per_node, "storage_options": storage_options}
    if spec.format == "pems_npz":
        dataset = load_pems_npz(data, files["graph"], files["ids"], freq=freq or spec.freq, start=spec.start,
                                **common)
    elif spec.format == "dcrnn_h5":
        dataset = load_dcrnn_h5(data, files["graph"], key=spec.h5_key, freq=freq or spec.freq, **common)
    elif spec.format == "ltsf_csv":
        dataset = load_ltsf_csv(data, files["graph"], freq=freq or spec.freq, **common)
    else:
        dataset = load_matrix_csv(data, files["graph"], freq=freq or spec.freq, start=spec.start, **common)
    if dataset.num_nodes != spec.num_nodes:
        raise ValueError(f"{data}: {dataset.num_nodes} nodes, but benchmark {spec.name} has {spec.num_nodes}")
    dataset.metadata["benchmark"] = spec.name
    return dataset


def _spec_for_file(path: str) -> BenchmarkSpec | None:
    base = posixpath.basename(path.replace(os.sep, "/")).lower()
    for spec in BENCHMARKS.values():
        if base in (n.lower() for n in spec.data_files):
            return spec
    return None


def resolve_benchmark(
    name_or_path: str,
    data_dir: str | None = None,
    freq: str | None = None,
    split: str | SplitRule | None = None,
    *,
    download: bool = False,
    null_value: NullValue | None = None,
    seed: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SpatioTemporalDataset:
    """A benchmark by name (``pems08``, ``etth2``, ``synthetic-traffic`` ...) or a path to a data file.

    Named benchmarks are looked up under ``data_dir`` (default ``$FACTOST_DATA_DIR`` or ``./data``) and its
    subfolders; nothing is downloaded unless ``download=True``. A path to a file of a known benchmark
    (e.g. ``.../PEMS08.npz``) keeps that benchmark's conventions; any other file is a generic benchmark
    whose ``freq``/``split``/``null_value`` come from the arguments.
    """
    text = str(name_or_path)
    if text.lower().startswith(SYNTHETIC_PREFIX):
        dataset = make_synthetic_benchmark(text.lower(), freq=freq, seed=seed)
        if split is not None:
            dataset.split = parse_split(split)
        return dataset
    if canonical_name(text) in BENCHMARKS:
        spec = BENCHMARKS[canonical_name(text)]
        root = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
        files = locate_files(spec, root, storage_options)
        if files["data"] is None and download:
            target = join(root, spec.name)
            for item in spec.downloads:
                download_file(item, target)
            files = locate_files(spec, root, storage_options)
        if files["data"] is None:
            fetchable = [d.filename for d in spec.downloads if d.url]
            hint = ("pass download=True to fetch " + ", ".join(fetchable)) if fetchable else (
                " ".join(sorted({d.note for d in spec.downloads if d.note})) or "download it by hand")
            raise FileNotFoundError(
                f"benchmark {spec.name!r}: none of {', '.join(spec.data_files)} found in {root} or its "
                f"subfolders (up to {SEARCH_DEPTH} levels; also looked for graph files "
                f"{', '.join(spec.graph_files) or '-'}); {hint}"
            )
        return _load_spec(spec, files, freq, split, storage_options)
    spec = _spec_for_file(text)
    if spec is not None and _exists(text, storage_options):
        folder = _dirname(text)
        listing = _listing(folder, storage_options) if folder != text else []
        files = {
            "data": text,
            "graph": _pick(listing, spec.graph_files, folder) if spec.graph_files else None,
            "ids": _pick(listing, spec.id_files, folder) if spec.id_files else None,
        }
        return _load_spec(spec, files, freq, split, storage_options)
    if _exists(text, storage_options):
        return load_generic(text, freq=freq, split=split, null_value=null_value, storage_options=storage_options)
    if spec is not None or _looks_like_path(text):
        raise FileNotFoundError(f"{text}: no such file")
    get_benchmark(text)  # raises: unknown name, listing the known ones
    raise AssertionError("unreachable")


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(GENERIC_SUFFIXES)


def download_file(item: DownloadSpec, target: str) -> None:
    """Download one spec into a local folder (downloads go to local disk only)."""
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"{target}: downloads need a local data_dir; copy the files to remote storage yourself")
    download(item, target)
