"""The tree speaks of the product alone: no path outside the repository, no machine path, no reference to notes
kept elsewhere, no words about how the work is organised.

Every design decision the code relies on is written in ``docs/design.md``; a reader who has only the repository
must find everything there. Scanned: code, tests, docs, configs, scripts and container/cluster manifests (every
text file outside ignored folders). This file is the one not scanned: it holds the patterns themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".json", ".txt", ".cfg", ".ini"}
TEXT_NAMES = {"Dockerfile", "run"}  # infra/docker/Dockerfile, .ci/run
SKIPPED_DIRS = {".git", ".venv", ".cache", ".pytest_cache", ".ruff_cache", "__pycache__", ".factost"}
SKIPPED_TOP = {"data", "runs"}  # ignored output folders at the top (see .gitignore)
# Where a scratch path is a mistake: documents, configs, scripts, and the benchmarks' defaults and help.
SCRATCH_SCOPE = re.compile(r"(\.(md|ya?ml|sh|toml|json)$)|(^benchmarks/)|(^configs/)|(^scripts/)")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    scope: re.Pattern[str] | None = None  # files (relative posix paths) the rule applies to; None: all


RULES = (
    Rule("note outside the repository", re.compile(r"[A-Z]+-FACTS|STACK-NOTES|\bDESIGN\.md\b")),
    Rule("facts file", re.compile(r"(?i)\bthe facts\b|\bfacts (file|say|says|add)\b|\(facts\)|\bfacts:")),
    Rule("machine path", re.compile(r"/work/|/home/|/Users/|[A-Za-z]:\\Users")),
    Rule("folder beside the checkout", re.compile(r"\.\./shared|[\"']shared[\"']")),
    Rule("scratch path", re.compile(r"/tmp/"), SCRATCH_SCOPE),
    Rule("work sessions", re.compile(
        r"(?i)\bsessions? (so far|of work)\b|\bproject's sessions\b|\b(work|working|development|dev) sessions?\b"
    )),
    Rule("work items", re.compile(
        r"(?i)\bthe issue\b|\bissue #?\d+\b|\bother engineers?\b|\bthe brief\b|\bhelper (session|engineer)s?\b"
        r"|\bnotes? (file|outside)\b|\bour notes\b"
    )),
)

# Legitimate uses, each (file, a substring of the one line it excuses): precise, so nothing else slips through.
ALLOWED: dict[tuple[str, str], str] = {
    ("tests/real_data.py", '_CHECKOUT.parent / "shared" / "data"'): "the default of FACTOST_TEST_DATA",
}


def violations(text: str, relpath: str) -> list[tuple[int, str, str]]:
    """(line number, rule, line) of every line of ``text`` (the file ``relpath``) that a rule flags."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule in RULES:
            if (rule.scope is None or rule.scope.search(relpath)) and rule.pattern.search(line):
                found.append((number, rule.name, line.strip()))
    return found


def scanned_files(root: Path = ROOT) -> list[str]:
    """Relative posix paths of every text file of the tree outside ignored folders, this file excepted."""
    files = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(
            d for d in dirs
            if d not in SKIPPED_DIRS and not d.endswith(".egg-info") and not (rel == Path() and d in SKIPPED_TOP)
        )
        files += [(rel / n).as_posix() for n in names if Path(n).suffix in TEXT_SUFFIXES or n in TEXT_NAMES]
    return sorted(f for f in files if f != SELF)


def _allowed(relpath: str, line: str) -> bool:
    return any(relpath == file and part in line for file, part in ALLOWED)


def tree_violations() -> list[str]:
    out = []
    for rel in scanned_files():
        text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
        out += [f"{rel}:{n}: {rule}: {line}" for n, rule, line in violations(text, rel) if not _allowed(rel, line)]
    return out


def test_the_tree_refers_to_nothing_outside_itself() -> None:
    found = tree_violations()
    assert not found, "references outside the repository or to how work is organised:\n" + "\n".join(found)


def test_the_scan_covers_code_tests_docs_configs_and_scripts() -> None:
    files = set(scanned_files())
    for expected in ("README.md", "docs/design.md", "docs/architecture.md", "tests/conftest.py",
                     "configs/local.yaml", "scripts/test.sh", "benchmarks/bench_blast.py", "training/model.py",
                     "prefect.yaml", "infra/docker/Dockerfile"):
        assert expected in files, expected
    assert len(files) > 100
    assert not any(f.startswith((".venv/", ".git/")) or "__pycache__" in f for f in files)
    assert SELF not in files


@pytest.mark.parametrize(
    ("relpath", "line", "rule"),
    [
        ("training/model.py", "Details follow ARCHITECTURE-FACTS (UTP backbone).", "note outside the repository"),
        ("infra/ray_runtime.py", "it hangs (measured, STACK-NOTES).", "note outside the repository"),
        ("docs/x.md", "see DESIGN.md", "note outside the repository"),
        ("adaptation/modules.py", "Choices the facts file leaves open", "facts file"),
        ("adaptation/config.py", 'description="add I_st to the future tokens (facts)"', "facts file"),
        ("adaptation/config.py", "Defaults follow /work/shared/notes.md", "machine path"),
        ("docs/x.md", "copy it from /home/alice/data", "machine path"),
        ("tests/conftest.py", 'SHARED = ROOT.parent / "shared" / "data"', "folder beside the checkout"),
        ("tests/x.py", '"""Real files from ../shared/data"""', "folder beside the checkout"),
        ("docs/benchmarks.md", "bench_etth2_fewshot.py --out /tmp/etth2_run2", "scratch path"),
        ("benchmarks/bench_x.py", 'parser.add_argument("--out", default="/tmp/bench")', "scratch path"),
        ("docs/benchmarks.md", "No GPU run: this project's sessions so far were not lent one.", "work sessions"),
        ("docs/benchmarks/adapt.md", "inside the issue's 20%", "work items"),
        ("pipelines/cli.py", "# see issue #16", "work items"),
        ("docs/x.md", "as the other engineers measured", "work items"),
    ],
)
def test_the_matcher_flags_planted_strings(relpath: str, line: str, rule: str) -> None:
    assert rule in [name for _, name, _ in violations(f"ok\n{line}\n", relpath)]


@pytest.mark.parametrize(
    ("relpath", "line"),
    [
        ("tests/integration/test_secrets.py", "not in Ray's session logs"),
        ("tests/conftest.py", '@pytest.fixture(scope="session")'),
        ("README.md", "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`"),
        ("infra/ray_runtime.py", "Ray's sockets and logs out of ``/tmp/ray``"),  # Ray's own default, in code
        ("tests/infra/test_config.py", 'path.write_text("storage:\\n  root: /tmp/x\\n  rooot: typo\\n")'),
        ("corpus/kernelsynth.py", "``{out_root}/_work/kernelsynth/{version_id}/chunk-NNNNNN.parquet``"),
        ("pipelines/one_click.py", "from prefect.artifacts import create_markdown_artifact"),
        ("docs/design.md", "see [design.md](design.md#blast) and docs/design.md"),
        ("docs/x.md", "the data folder beside the checkout (``FACTOST_TEST_DATA``)"),
    ],
)
def test_the_matcher_passes_legitimate_uses(relpath: str, line: str) -> None:
    assert violations(line, relpath) == []


def test_every_allowed_line_exists_and_is_one_the_matcher_flags() -> None:
    """A stale entry (its line edited away) fails, so the allow-list cannot grow into a blanket excuse."""
    for (rel, part), _why in ALLOWED.items():
        lines = [line for line in (ROOT / rel).read_text().splitlines() if part in line]
        assert len(lines) == 1, (rel, part, len(lines))
        assert violations(lines[0], rel), (rel, part)
