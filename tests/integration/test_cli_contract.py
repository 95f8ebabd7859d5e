"""The CLI's contract, through the real ``factost`` console script: usage errors, runtime errors, --json, speed."""

from __future__ import annotations

import json
import resource
import time
import typing
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.integration.cli_helpers import invoke, last_line, run_factost

COMMANDS = ["ingest", "fetch", "synth", "balance", "pretrain", "adapt", "rerun", "runs", "report", "versions",
            "datasets", "show", "verify", "evaluate", "run", "run refresh", "run pretrain-then-adapt"]


@pytest.fixture
def usage_error(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Run a command (in this process) that must fail as a usage error; returns its stderr."""

    def run(*args: str) -> str:
        code, out, err = invoke(capsys, *args)
        assert code == 2, (args, code, err)
        command = " ".join(a for a in args[:2] if not a.startswith("-") and a in " ".join(COMMANDS).split())
        assert f"Usage: factost {command}" in err, err
        assert f"Try 'factost {command} --help' for help." in err, err
        assert out == ""
        return err

    return run


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_help_of_every_command_answers_within_a_second() -> None:
    """CPU seconds of the process (what lazy imports decide), so a busy shared machine does not count."""
    for command in ["", *COMMANDS]:
        before, started = _cpu_seconds(), time.perf_counter()
        proc = run_factost(*command.split(), "--help", timeout=30)
        cpu, wall = _cpu_seconds() - before, time.perf_counter() - started
        assert "Usage: factost" in proc.stdout
        assert cpu < 1.0, (command, f"{cpu:.2f} s CPU, {wall:.2f} s wall")


def test_version() -> None:
    assert run_factost("--version").stdout.strip() == f"factost {version('factost')}"


def test_usage_errors_exit_2_with_the_usage_line(usage_error: Callable[..., str]) -> None:
    proc = run_factost("ingest", check=False)  # the console script itself, once
    assert proc.returncode == 2 and "Usage: factost ingest" in proc.stderr and "Missing argument" in proc.stderr
    assert "Missing argument 'KIND'" in usage_error("ingest")
    assert "No such option: --bogus" in usage_error("synth", "--bogus", "1")
    assert "unknown connector 'xls'; known: tsf, m4, ltsf, wiki, lotsa, long" in usage_error("ingest", "xls", "x")
    assert "unknown size 'huge'" in usage_error("pretrain", "--corpus", "x", "--size", "huge")
    assert "unknown mode 'fewest'" in usage_error("adapt", "--checkpoint", "c", "--benchmarks", "b",
                                                   "--mode", "zero,fewest")
    assert "Missing option '--checkpoint'" in usage_error("adapt", "--benchmarks", "b")
    assert "Invalid value for '--n'" in usage_error("synth", "--n", "many")
    assert "expected IN:OUT" in usage_error("adapt", "--checkpoint", "c", "--benchmarks", "b", "--horizon", "96")


def test_bad_set_pairs_exit_2_naming_them(usage_error: Callable[..., str], tmp_path: Path) -> None:
    out = str(tmp_path / "root")
    err = usage_error("synth", "--out", out, "--set", "synth.n_seriez=3")
    assert "synth.n_seriez: unknown key 'n_seriez'" in err and "n_series" in err
    err = usage_error("runs", "--set", "nosuch.key=1")
    assert "nosuch.key: unknown key 'nosuch'" in err and "pretrain" in err
    assert "synth.n_series='many'" in usage_error("synth", "--out", out, "--set", "synth.n_series=many")
    assert "'synth.n_series': expected section.key=value" in usage_error("synth", "--set", "synth.n_series")
    assert "expected section.key=value" in usage_error("run", "refresh", "--set", "=3")
    assert "expected BENCHMARK.KEY=VALUE" in usage_error("adapt", "--checkpoint", "c", "--benchmarks", "b",
                                                          "--benchmark-option", "freq=15min")
    err = usage_error("adapt", "--checkpoint", "c", "--benchmarks", "b", "--benchmark-option", "my_city.fre=1h")
    assert "benchmarks.options.my_city.fre" in err
    # a convenience flag is the same mechanism: its bad value is named by the key it sets
    assert "synth.length=0" in usage_error("synth", "--out", out, "--length", "0")


def test_runtime_errors_are_one_line_exit_1() -> None:
    proc = run_factost("runs", "--profile", "no-such-profile", check=False, timeout=60)
    assert proc.returncode == 1 and "profile 'no-such-profile' not found" in proc.stderr


def test_runs_on_an_empty_or_missing_root_is_an_empty_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    proc = run_factost("runs", "--out", str(tmp_path / "missing"), "--json", timeout=60)
    assert json.loads(proc.stdout) == [] and proc.returncode == 0
    for command in ("runs", "datasets"):
        for root in (tmp_path / "missing", tmp_path):
            code, out, _ = invoke(capsys, command, "--out", str(root), "--json")
            assert code == 0 and json.loads(out) == []
            code, out, _ = invoke(capsys, command, "--out", str(root))
            assert code == 0 and f"no {'recorded runs' if command == 'runs' else 'datasets'}" in out


def test_choice_lists_match_the_models() -> None:
    from adaptation.config import ALL_MODES
    from corpus.sources.registry import CONNECTORS, load_builtin_connectors
    from pipelines.cli import ADAPT_MODES, CONNECTOR_KINDS, MODEL_SIZES
    from training.config import ModelSize

    load_builtin_connectors()
    assert set(CONNECTOR_KINDS) == set(CONNECTORS)
    assert MODEL_SIZES == typing.get_args(ModelSize) and ADAPT_MODES == ALL_MODES
    wide = {"COLUMNS": "250"}
    assert "[minuscule|tiny|small|base]" in run_factost("pretrain", "--help", env=wide).stdout
    assert "[zero|few|full]" in run_factost("adapt", "--help", env=wide).stdout
    assert "Connector: " + ", ".join(CONNECTOR_KINDS) in run_factost("ingest", "--help", env=wide).stdout


@pytest.mark.slow
def test_stage_json_is_one_document_with_the_promised_fields(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    proc = run_factost("synth", "--n", "40", "--length", "64", "--out", root, "--json", timeout=300)
    doc = json.loads(proc.stdout)
    assert {"dataset", "version_id", "created", "rows", "bytes", "inputs", "url"} <= set(doc)
    assert doc["rows"] == 40 and doc["dataset"] == "kernelsynth"
    human = run_factost("synth", "--n", "40", "--length", "64", "--out", root, timeout=300)
    assert last_line(human.stdout) == doc["url"]
    listed = json.loads(run_factost("versions", "kernelsynth", "--out", root, "--json").stdout)
    assert [v["url"] for v in listed] == [doc["url"]]


def test_overrides_keep_the_storage_credentials() -> None:
    from pipelines.profile import Profile
    from pipelines.settings import apply_overrides

    prof = Profile.model_validate({"storage": {"root": "s3://b/r", "options": {"key": "AK", "secret": "SK"}}})
    moved = apply_overrides(prof, {"storage.root": "s3://b/other", "storage.options.endpoint_url": "http://x"})
    assert moved.storage.root == "s3://b/other" and moved.storage.options == {"endpoint_url": "http://x"}
    assert {k: v.get_secret_value() for k, v in moved.storage.credentials.items()} == {"key": "AK", "secret": "SK"}
    assert "SK" not in moved.model_dump_json()
