"""A version's lineage names the pretraining runs trained on it, found through the training stage's layout."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.catalog import lineage
from training.data import write_sine_corpus
from training.paths import RunPaths


def test_lineage_lists_the_pretraining_runs_of_a_corpus(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    corpus = write_sine_corpus(root, n_series=8, length=64)
    other = write_sine_corpus(root, n_series=8, length=64, seed=1)
    for name, version in (("on-it", corpus), ("elsewhere", other)):
        config = Path(RunPaths.make(root, name).config_url)
        config.parent.mkdir(parents=True)
        config.write_text(json.dumps({"run_name": name, "corpus_version": version.version_id}))
    Path(RunPaths.make(root, "unfinished").run_url).mkdir(parents=True)  # no config.json yet: not listed
    runs = [d for d in lineage(corpus, root)["down"] if d["kind"] == "pretrain"]
    assert [(r["run"], r["url"]) for r in runs] == [("on-it", RunPaths.make(root, "on-it").run_url)]
