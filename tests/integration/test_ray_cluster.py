"""Every stage on a real multi-node Ray cluster: a head and two worker raylets on this machine, S3 on moto.

The drivers are separate processes that join the cluster by address (the profile's ``ray.address``, or
``RAY_ADDRESS``), as a flow run on a cluster's head node or in a pod inside its network does. Asserted: the
corpus stages spread their units over the nodes and publish byte-for-byte what the embedded default publishes;
the STA fan-out runs its units there with the embedded results; a worker node killed mid-KernelSynth or
mid-BLAST scoring changes no byte of the published version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from infra.versions import list_versions, open_version
from tests.conftest import PROJECT_ROOT, real_data
from tests.s3_server import ACCESS_KEY, SECRET_KEY, make_bucket

pytestmark = pytest.mark.slow

FACTOST = str(Path(sys.executable).parent / "factost")
TASK_TITLE = "ray::execute_unit"  # the process title of a Ray worker while it runs a stage unit


@pytest.fixture(scope="module")
def cluster(s3_server) -> Iterator[Any]:
    """A head and two worker nodes of 2 CPUs each; their workers reach S3 with the standard AWS variables."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.delenv("RAY_ADDRESS", raising=False)
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        for _ in range(2):
            c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
        c.shutdown()


RESULT = "RESULT: "  # python drivers mark their result line: Ray's own messages reach stdout too


def run_driver(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a driver process to completion; returns its ``RESULT:`` line (or its last stdout line)."""
    proc = subprocess.run(
        args, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args[:3]} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.strip().splitlines()
    marked = [line[len(RESULT):] for line in lines if line.startswith(RESULT)]
    return marked[-1] if marked else lines[-1]


def python_driver(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def corpus_profile(root: str, options: dict[str, Any], address: str | None) -> dict[str, Any]:
    """Two real Monash files as one source, KernelSynth and BLAST, sized to run in seconds."""
    return {
        "name": "cluster-test",
        "storage": {"root": root, "options": options},
        "ray": {"address": address, "num_cpus": 4 if address is None else None},
        "ingest": {
            "min_length": 8,
            "chunk_bytes": 256 * 1024,  # the 1.7 MB M4 file in 7 chunks: units of one large file
            "sources": [
                {
                    "name": "monash",
                    "kind": "tsf",
                    "paths": [
                        str(real_data("monash", "m4_hourly_dataset.tsf")),
                        str(real_data("monash", "ausgrid_weekly_sample.tsf")),
                    ],
                    "domain": "mixed",
                }
            ],
        },
        "synth": {"n_series": 240, "length": 256, "seed": 3, "chunk_size": 30},
        "balance": {"min_length": 128, "window": 256, "umap_min_sample": 200, "umap_n_neighbors": 15,
                    "grid_size": 10, "n_samples": 300, "sample_length": 256, "shard_rows": 60, "mixup_rate": 0.2,
                    "feature_batch_rows": 64, "seed": 3},
    }


def part_hashes(url: str, options: dict[str, Any]) -> list[str]:
    return [p["sha256"] for p in open_version(url, options).manifest["parts"]]


def refresh(profile: dict[str, Any], folder: Path) -> dict[str, str]:
    """``factost run refresh`` on a profile file; returns each stage's version URL."""
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    run_driver([FACTOST, "run", "refresh", "--profile", str(path)])
    root, options = profile["storage"]["root"], profile["storage"]["options"]
    return {
        ds: list_versions(root, ds, options)[-1].url for ds in ("corpus/monash", "kernelsynth", "training_corpus")
    }


@pytest.fixture(scope="module")
def refreshed(cluster, s3_server, tmp_path_factory) -> dict[str, Any]:
    """The same refresh on the embedded default (local folder, in-process Ray) and on the cluster with S3."""
    local_dir = tmp_path_factory.mktemp("embedded")
    embedded = refresh(corpus_profile(str(local_dir / "store"), {}, None), local_dir)
    make_bucket(s3_server, "cluster-refresh")
    s3_options = {"endpoint_url": s3_server.endpoint}
    on_cluster = refresh(corpus_profile("s3://cluster-refresh/store", s3_options, cluster.address),
                         tmp_path_factory.mktemp("cluster"))
    return {"embedded": embedded, "cluster": on_cluster, "s3_options": s3_options}


def test_refresh_on_three_nodes_publishes_the_embedded_bytes(refreshed: dict[str, Any], cluster) -> None:
    s3 = refreshed["s3_options"]
    node_ids = {n["NodeID"] for n in _alive_nodes(cluster)}
    for dataset, url in refreshed["cluster"].items():
        version = open_version(url, s3)
        nodes = version.manifest["stats"]["ray_nodes"]
        assert len(nodes) >= 2, f"{dataset}: all units ran on one node: {nodes}"
        assert set(nodes) <= node_ids
        assert part_hashes(url, s3) == part_hashes(refreshed["embedded"][dataset], {}), dataset
        assert version.version_id == open_version(refreshed["embedded"][dataset]).version_id
    embedded_nodes = open_version(refreshed["embedded"]["kernelsynth"]).manifest["stats"]["ray_nodes"]
    assert len(embedded_nodes) == 1 and sum(embedded_nodes.values()) == 8  # 240 series in chunks of 30
    ingest_units = open_version(refreshed["embedded"]["corpus/monash"]).manifest["stats"]["ray_nodes"]
    assert sum(ingest_units.values()) >= 8  # >= 7 chunks of the M4 file + the Ausgrid file


def _alive_nodes(cluster: Any) -> list[dict[str, Any]]:
    code = f"""
    import json, ray
    ray.init(address={cluster.address!r}, log_to_driver=False)
    print("RESULT: " + json.dumps([n for n in ray.nodes() if n["Alive"]]))
    """
    return json.loads(run_driver(python_driver(code)))


def kill_node_when_busy(cluster: Any, node: Any, stop: threading.Event, killed: list[str]) -> None:
    """Remove ``node`` (raylet and workers, no grace) as soon as one of its workers runs a stage unit."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    while not stop.is_set():
        try:
            titles = [" ".join(p.cmdline()) for p in raylet.children(recursive=True)]
        except psutil.Error:
            titles = []
        if any(t.startswith(TASK_TITLE) for t in titles):
            killed.append(node.unique_id)
            cluster.remove_node(node, allow_graceful=False)
            return
        time.sleep(0.02)


def run_with_node_killed(cluster: Any, args: list[str]) -> tuple[str, list[str]]:
    """Run a driver on the cluster while a watcher kills one worker node mid-work; a fresh node replaces it."""
    victim = cluster.worker_nodes and sorted(cluster.worker_nodes, key=lambda n: n.unique_id)[0]
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_node_when_busy, args=(cluster, victim, stop, killed), daemon=True)
    watcher.start()
    try:
        result = run_driver(args, env={"RAY_ADDRESS": cluster.address})
    finally:
        stop.set()
        watcher.join(timeout=30)
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    return result, killed


SYNTH = """
from corpus.kernelsynth import KernelSynthConfig, synthesize
cfg = KernelSynthConfig(n_series=1200, length=512, seed=5, chunk_size=40, part_rows=100)
print("RESULT: " + synthesize(cfg, {root!r}, {{"endpoint_url": {endpoint!r}}}, progress=False).url)
"""

BALANCE = """
from corpus.blast.balance import balance
from corpus.blast.config import BlastConfig
cfg = BlastConfig(min_length=128, window=512, umap_min_sample=200, umap_n_neighbors=15, grid_size=10,
                  n_samples=400, sample_length=512, shard_rows=100, mixup_rate=0.2, feature_batch_rows=32, seed=5)
print("RESULT: " + balance([{corpus!r}], cfg, {root!r}, {{"endpoint_url": {endpoint!r}}}, progress=False).url)
"""


@pytest.fixture(scope="module")
def fault_bucket(cluster, s3_server) -> str:
    make_bucket(s3_server, "cluster-faults")
    return "s3://cluster-faults"


def test_a_node_killed_mid_kernelsynth_changes_no_byte(cluster, s3_server, fault_bucket: str) -> None:
    s3 = {"endpoint_url": s3_server.endpoint}
    env = {"RAY_ADDRESS": cluster.address}
    calm = run_driver(python_driver(SYNTH.format(root=f"{fault_bucket}/calm", endpoint=s3_server.endpoint)), env)
    disturbed, killed = run_with_node_killed(
        cluster, python_driver(SYNTH.format(root=f"{fault_bucket}/killed", endpoint=s3_server.endpoint))
    )
    assert killed, "the watcher never saw a unit running on the victim node"
    assert part_hashes(disturbed, s3) == part_hashes(calm, s3)
    nodes = open_version(disturbed, s3).manifest["stats"]["ray_nodes"]
    assert sum(nodes.values()) == 30  # every chunk completed exactly once in the tally, wherever it reran


def test_a_node_killed_mid_blast_scoring_changes_no_byte(cluster, s3_server, fault_bucket: str) -> None:
    s3 = {"endpoint_url": s3_server.endpoint}
    env = {"RAY_ADDRESS": cluster.address}
    corpus = run_driver(python_driver(SYNTH.format(root=f"{fault_bucket}/input", endpoint=s3_server.endpoint)), env)
    code = BALANCE.format(corpus=corpus, root=f"{fault_bucket}/calm", endpoint=s3_server.endpoint)
    calm = run_driver(python_driver(code), env)
    code = BALANCE.format(corpus=corpus, root=f"{fault_bucket}/killed", endpoint=s3_server.endpoint)
    disturbed, killed = run_with_node_killed(cluster, python_driver(code))
    assert killed, "the watcher never saw a unit running on the victim node"
    assert part_hashes(disturbed, s3) == part_hashes(calm, s3)
    stats = open_version(disturbed, s3).manifest["stats"]
    assert stats["series_scored"] == 1200
    assert stats["units"]["blast-score"] == 12 and stats["units"]["blast-shards"] == 4  # 12 parts, 400 / 100
    assert sum(stats["ray_nodes"].values()) == sum(stats["units"].values())


def test_one_click_on_the_cluster_matches_the_embedded_sta(cluster, s3_server, refreshed, tmp_path: Path) -> None:
    """Pretraining and both benchmarks' STA units on the cluster; the same adapt on the embedded default."""
    s3 = refreshed["s3_options"]
    profile = corpus_profile("s3://cluster-refresh/store", s3, cluster.address)
    profile["pretrain"] = {"size": "minuscule", "steps": 8, "batch_size": 8, "context_length": 128,
                           "max_horizon": 32, "num_workers": 2, "checkpoint_every": 4, "log_every": 4, "seed": 1}
    profile["adapt"] = {"modes": ["zero", "few"], "max_steps": 6, "max_epochs": 1, "batch_size": 8,
                        "horizons": [[12, 12]], "eval_stride": 6, "max_val_windows": 32, "seed": 1}
    profile["benchmarks"] = {"names": ["synthetic-traffic", "synthetic-grid"]}
    path = tmp_path / "one-click.yaml"
    path.write_text(yaml.safe_dump(profile))
    run_driver([FACTOST, "run", "pretrain-then-adapt", "--profile", str(path), "--no-refresh"])
    runs = [r for r in list_runs("s3://cluster-refresh/store", s3) if r.get("kind") == "pretrain-then-adapt"]
    run = sorted(runs, key=lambda r: r["started_at"])[-1]
    assert run["status"] == "ok"
    cluster_rows = {(r["benchmark"], r["method"], r["mode"]): r for r in run["results"]}
    assert {b for b, _, _ in cluster_rows} == {"synthetic-traffic", "synthetic-grid"}
    checkpoint = run["pretrain"]["url"]

    code = f"""
    import json
    from adaptation.config import AdaptConfig
    from pipelines.adapt import run_adapt_flow
    cfg = AdaptConfig(**{json.dumps(profile["adapt"])})
    res = run_adapt_flow(parallel=None, checkpoint={checkpoint!r}, benchmarks=["synthetic-traffic", "synthetic-grid"],
                         cfg=cfg, out={str(tmp_path / "embedded")!r}, storage_options={s3!r})
    print("RESULT: " + json.dumps(res.rows, default=str))
    """
    embedded_rows = json.loads(run_driver(python_driver(code), env={"RAY_ADDRESS": ""}))
    assert len(embedded_rows) == len(cluster_rows) == 8  # 2 benchmarks x (zero, few, scratch-few, naive)
    for row in embedded_rows:
        other = cluster_rows[(row["benchmark"], row["method"], row["mode"])]
        for metric in ("mae", "rmse"):
            assert other[metric] == pytest.approx(row[metric], rel=0.05), (row["benchmark"], row["method"], metric)


def list_runs(root: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    from infra.storage import filesystem, join, read_json

    fs, path = filesystem(join(root, "runs"), options)
    return [read_json(fs, p) for p in fs.glob(f"{path}/*/run.json")]
