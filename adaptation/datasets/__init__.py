"""Spatio-temporal benchmarks: loaders, registry, calendar features, splits and a synthetic generator."""

from adaptation.datasets.calendar import (
    calendar_features,
    feature_vocab,
    index_calendar,
    steps_per_day,
)
from adaptation.datasets.dataset import SpatioTemporalDataset
from adaptation.datasets.downloads import DownloadSpec, download
from adaptation.datasets.graph import (
    gaussian_kernel_adjacency,
    read_dcrnn_pickle,
    read_distance_matrix,
    read_weight_matrix,
)
from adaptation.datasets.loaders import (
    load_dcrnn_h5,
    load_generic,
    load_generic_npz,
    load_ltsf_csv,
    load_matrix_csv,
    load_parquet_matrix,
    load_pems_npz,
    save_generic,
)
from adaptation.datasets.pickle_safe import UnsafePickleError, load_pickle_restricted
from adaptation.datasets.registry import BENCHMARKS, BenchmarkSpec, get_benchmark, resolve_benchmark
from adaptation.datasets.splits import SplitRule, ZScoreScaler, few_shot_slice, observed_mask, parse_split
from adaptation.datasets.synthetic import (
    SYNTHETIC_PRESETS,
    SyntheticConfig,
    make_synthetic_benchmark,
)
from infra.freq import normalize_freq  # part of this package's API: benchmarks name their frequencies

__all__ = [
    "BENCHMARKS",
    "SYNTHETIC_PRESETS",
    "BenchmarkSpec",
    "DownloadSpec",
    "SpatioTemporalDataset",
    "SplitRule",
    "SyntheticConfig",
    "UnsafePickleError",
    "ZScoreScaler",
    "calendar_features",
    "download",
    "feature_vocab",
    "few_shot_slice",
    "gaussian_kernel_adjacency",
    "get_benchmark",
    "index_calendar",
    "load_dcrnn_h5",
    "load_generic",
    "load_generic_npz",
    "load_ltsf_csv",
    "load_matrix_csv",
    "load_parquet_matrix",
    "load_pems_npz",
    "load_pickle_restricted",
    "make_synthetic_benchmark",
    "normalize_freq",
    "observed_mask",
    "parse_split",
    "read_dcrnn_pickle",
    "read_distance_matrix",
    "read_weight_matrix",
    "resolve_benchmark",
    "save_generic",
    "steps_per_day",
]
