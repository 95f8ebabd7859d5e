"""KernelSynth: the kernel bank against scikit-learn, exact sampling, determinism, idempotence and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from scipy.stats import norm

import corpus.kernelsynth as ks
from corpus.kernels import BANK_SIZE, KernelExpr, kernel_bank
from corpus.kernelsynth import (
    KERNELSYNTH_SCHEMA,
    GridSampler,
    KernelSynthConfig,
    factor_dense,
    generate_series,
    pivoted_cholesky,
    sample_product,
    series_rng,
    series_table,
    synthesize,
)
from corpus.schema import content_hash
from infra.schemas import CANONICAL_SCHEMA
from infra.stage_runtime import StageWorkError
from infra.versions import read_table

DEFAULT_LENGTH = KernelSynthConfig().length
SMALL = {"length": 32, "chunk_size": 7, "part_rows": 16, "seed": 11}


def label_index(bank: tuple, label: str) -> int:
    return next(i for i, k in enumerate(bank) if k.label == label)


def make_sampler(length: int, **overrides: object) -> GridSampler:
    return GridSampler.from_config(KernelSynthConfig(length=length, **overrides))


def part_hashes(version) -> list[str]:
    return [p["sha256"] for p in version.manifest["parts"]]


# ---------------------------------------------------------------------------------------------- the kernel bank


def test_bank_is_the_reference_bank() -> None:
    bank = kernel_bank(DEFAULT_LENGTH)
    families = [k.family for k in bank]
    assert BANK_SIZE == len(bank) == 33
    assert {f: families.count(f) for f in set(families)} == {
        "periodic": 21,
        "linear": 3,
        "rbf": 3,
        "rational_quadratic": 3,
        "white": 2,
        "constant": 1,
    }
    assert [k.label for k in bank].count(f"Periodic(4/{DEFAULT_LENGTH})") == 3
    assert bank[0].param == 24 / DEFAULT_LENGTH


def test_each_base_kernel_matches_sklearn_on_the_grid() -> None:
    """Our formula, and the Toeplitz build the sampler uses, both equal scikit-learn's ``kernel(X)``."""
    sampler = make_sampler(DEFAULT_LENGTH)
    X = sampler.x[:, None]
    for k, base in enumerate(sampler.bank):
        expected = base.to_sklearn()(X)
        np.testing.assert_allclose(base.matrix(sampler.x), expected, rtol=1e-10, atol=1e-10, err_msg=base.label)
        np.testing.assert_allclose(sampler.product_matrix((k,)), expected, rtol=1e-10, atol=1e-10, err_msg=base.label)
        np.testing.assert_allclose(base.diagonal(sampler.x), np.diag(expected), rtol=1e-12, err_msg=base.label)


def test_base_factors_reconstruct_their_kernels_to_round_off() -> None:
    sampler = make_sampler(DEFAULT_LENGTH)
    for k, base in enumerate(sampler.bank):
        if base.family == "white":
            continue
        matrix = sampler.product_matrix((k,))
        factor = sampler.factor(k)
        assert factor.shape[1] <= 40, base.label  # numerically low rank: what makes the feature route cheap
        error = np.abs(factor @ factor.T - matrix).max()
        assert error <= 1e-11 * np.abs(matrix).max(), (base.label, error)


def test_expanded_monomials_equal_the_sklearn_composition() -> None:
    length = 48
    sampler = make_sampler(length)
    X = sampler.x[:, None]
    rng = np.random.default_rng(3)
    for _ in range(60):
        expr = ks.draw_kernel(rng, BANK_SIZE, 5, 0.5)
        expected = expr.to_sklearn(sampler.bank)(X)
        expanded = sum(sampler.product_matrix(t) for t in expr.monomials())
        label = expr.label(sampler.bank)
        np.testing.assert_allclose(expanded, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max(), err_msg=label)
        np.testing.assert_allclose(expr.matrix(sampler.bank, sampler.x), expected, rtol=1e-10, atol=1e-12)


def test_labels_read_back_as_the_left_fold() -> None:
    bank = kernel_bank(DEFAULT_LENGTH)
    rbf, per, lin = (label_index(bank, s) for s in ("RBF(0.1)", "Periodic(24/1024)", "Linear(1)"))
    assert KernelExpr((rbf, per, lin), ("+", "*")).label(bank) == "(RBF(0.1) + Periodic(24/1024)) * Linear(1)"
    assert KernelExpr((rbf, per, lin), ("*", "+")).label(bank) == "RBF(0.1) * Periodic(24/1024) + Linear(1)"
    assert KernelExpr((rbf, per, lin, rbf), ("+", "*", "*")).label(bank) == (
        "(RBF(0.1) + Periodic(24/1024)) * Linear(1) * RBF(0.1)"
    )
    assert KernelExpr((rbf, per, lin), ("+", "*")).monomials() == [(rbf, lin), (per, lin)]


# ------------------------------------------------------------------------------------------------ exact sampling


def implied_covariance(draw, width: int) -> np.ndarray:
    """Covariance of a linear map z -> y with z ~ N(0, I): the Gram matrix of its columns."""
    columns = np.stack([draw(np.eye(width)[j]) for j in range(width)], axis=1)
    return columns @ columns.T


def test_feature_product_has_exactly_the_hadamard_covariance() -> None:
    sampler = make_sampler(40)
    terms = [sampler.factor(label_index(sampler.bank, s)) for s in ("Linear(1)", "RBF(1)", "Periodic(24/40)")]
    width = int(np.prod([f.shape[1] for f in terms]))
    cov = implied_covariance(lambda z: sample_product(terms, z), width)
    expected = np.prod([f @ f.T for f in terms], axis=0)
    np.testing.assert_allclose(cov, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_dense_factorizations_are_exact_and_reject_indefinite_matrices() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 30))
    full = a @ a.T
    factor, route = factor_dense(full, None, 1e-8)
    assert route == "dense-cholesky"
    np.testing.assert_allclose(factor @ factor.T, full, rtol=1e-12, atol=1e-10)
    low = a[:, :4] @ a[:, :4].T  # singular: plain Cholesky fails, pivoted Cholesky finds rank 4
    factor, route = factor_dense(low, None, 1e-8)
    assert route == "dense-pivoted" and factor.shape == (30, 4)
    np.testing.assert_allclose(factor @ factor.T, low, atol=1e-10)
    with pytest.raises(np.linalg.LinAlgError, match="not positive semidefinite"):
        factor_dense(np.diag([1.0, 0.5, -0.25]), None, 1e-8)
    with pytest.raises(np.linalg.LinAlgError, match="non-finite"):
        pivoted_cholesky(np.array([[1.0, np.nan], [np.nan, 1.0]]), None, 1e-8)


def wishart_z(samples: np.ndarray, cov: np.ndarray) -> float:
    """Largest standardised deviation of the zero-mean sample covariance from ``cov``.

    For n draws of N(0, K), S_ij = mean(y_i y_j) has mean K_ij and variance (K_ij^2 + K_ii K_jj) / n (Wishart).
    """
    n = samples.shape[0]
    s = samples.T @ samples / n
    sd = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    iu = np.triu_indices_from(cov)
    return float(np.max(np.abs(s - cov)[iu] / sd[iu]))


@pytest.mark.parametrize(
    ("formula", "max_features", "route"),
    [
        (("RBF(0.1)", "+", "Periodic(24/64)", "*", "Linear(1)"), None, "features"),
        (("Periodic(7/64)", "*", "RQ(alpha=0.1)", "*", "Periodic(12/64)", "+", "RBF(1)"), 1, "dense-cholesky"),
        (("RBF(10)", "*", "Constant(1)", "*", "Linear(10)"), 1, "dense-pivoted"),
        (("White(0.1)", "*", "Linear(10)", "+", "Periodic(30/64)"), None, "diagonal"),
    ],
)
def test_empirical_covariance_matches_the_kernel(
    formula: tuple[str, ...], max_features: int | None, route: str
) -> None:
    length, n = 64, 4000
    overrides = {} if max_features is None else {"max_features": max_features}
    sampler = make_sampler(length, **overrides)
    expr = KernelExpr(tuple(label_index(sampler.bank, s) for s in formula[::2]), tuple(formula[1::2]))
    cov = expr.to_sklearn(sampler.bank)(sampler.x[:, None])
    rng = np.random.default_rng(20240611)
    draws, routes = zip(*(sampler.sample(expr, rng) for _ in range(n)), strict=True)
    assert route in routes[0]
    samples = np.stack(draws)
    # Bonferroni over the L(L+1)/2 distinct entries at a family-wise level of 1e-3 (normal approximation).
    entries = length * (length + 1) // 2
    threshold = norm.isf(1e-3 / (2 * entries))
    assert wishart_z(samples, cov) < threshold
    # The same statistic does see a wrong covariance (here: the kernel without its last factor or term).
    wrong = KernelExpr(expr.kernels[:-1], expr.ops[:-1]).to_sklearn(sampler.bank)(sampler.x[:, None])
    assert wishart_z(samples, wrong) > threshold


# ----------------------------------------------------------------------------------- seeds, redraws and rows


def test_fixed_seed_draws_pinned_kernels() -> None:
    """PCG64 streams are stable across platforms and numpy versions, so the kernel draws are pinned."""
    cfg = KernelSynthConfig(n_series=3, length=64, seed=0)
    assert [generate_series(cfg, i).kernel for i in range(3)] == [
        "Periodic(4/64)",
        "White(1) + Constant(1) + Periodic(26/64)",
        "Periodic(30/64)",
    ]


def test_random_walk_term_is_a_wiener_process_added_to_the_unchanged_draw() -> None:
    """The added term starts at 0 and its end-point variance equals its quadratic variation (Var W(1) = 1)."""
    plain = KernelSynthConfig(n_series=400, length=128, seed=3)
    walked = plain.model_copy(update={"random_walk_probability": 1.0})
    half = plain.model_copy(update={"random_walk_probability": 0.5})
    ratios_end, ratios_mid = [], []
    for i in range(400):
        base, walk = generate_series(plain, i), generate_series(walked, i)
        assert walk.kernel == f"{base.kernel} + RandomWalk" and walk.routes[-1] == "random-walk"
        term = walk.values - base.values
        assert term[0] == 0.0
        quadratic_variation = float(np.sum(np.diff(term) ** 2))
        ratios_end.append(term[-1] ** 2 / quadratic_variation)
        ratios_mid.append(term[64] ** 2 / quadratic_variation)
    assert np.mean(ratios_end) == pytest.approx(1.0, abs=0.15)
    assert np.mean(ratios_mid) == pytest.approx(64 / 127, abs=0.08)
    halves = [generate_series(half, i) for i in range(400)]
    assert sum(h.kernel.endswith("+ RandomWalk") for h in halves) == pytest.approx(200, abs=30)
    for i, h in enumerate(halves[:20]):  # each series is either the plain draw or the walked one, bit for bit
        expected = walked if h.kernel.endswith("+ RandomWalk") else plain
        np.testing.assert_array_equal(h.values, generate_series(expected, i).values)


class FailFirst(GridSampler):
    """Fails the first draw it is asked for, as a singular factorization would."""

    calls = 0

    def sample(self, expr, rng):  # type: ignore[override]
        self.calls += 1
        if self.calls == 1:
            raise np.linalg.LinAlgError("simulated failure")
        return super().sample(expr, rng)


def test_linear_algebra_failure_redraws_from_the_next_sub_stream() -> None:
    cfg = KernelSynthConfig(n_series=10, length=32, seed=5)
    result = generate_series(cfg, 4, FailFirst.from_config(cfg))
    plain = GridSampler.from_config(cfg)
    rng = series_rng(5, 4, 1)
    expr = ks.draw_kernel(rng, BANK_SIZE, cfg.max_kernels, cfg.product_probability)
    expected, _ = plain.sample(expr, rng)
    first = ks.draw_kernel(series_rng(5, 4, 0), BANK_SIZE, cfg.max_kernels, cfg.product_probability)
    assert result.redraws == 1 and result.kernel == expr.label(plain.bank)
    assert result.failures == (f"{first.label(plain.bank)}: simulated failure",)
    np.testing.assert_array_equal(result.values, expected)
    attrs = json.loads(series_table(cfg, [result])["attributes"][0].as_py())
    assert attrs["redraws"] == 1 and attrs["failed_kernels"] == list(result.failures)


def test_series_fail_with_their_index_when_every_draw_fails() -> None:
    class AlwaysFail(GridSampler):
        def sample(self, expr, rng):  # type: ignore[override]
            raise np.linalg.LinAlgError("singular")

    cfg = KernelSynthConfig(n_series=10, length=16, seed=1, max_redraws=2)
    with pytest.raises(RuntimeError, match=r"series 7 \(seed 1\): all 3 kernel draws failed"):
        generate_series(cfg, 7, AlwaysFail.from_config(cfg))


@pytest.mark.parametrize(
    ("field", "value"),
    [("length", 0), ("max_kernels", 0), ("n_series", -1), ("product_probability", 1.5), ("workers", 0),
     ("random_walk_probability", -0.1)],
)
def test_bad_config_values_are_rejected_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        KernelSynthConfig(**{field: value})
    with pytest.raises(ValidationError, match="extra"):
        KernelSynthConfig(lenght=12)


# ---------------------------------------------------------------------------------- the dataset stage


def test_rows_follow_the_canonical_schema(tmp_path: Path) -> None:
    cfg = KernelSynthConfig(n_series=10, **SMALL)
    version = synthesize(cfg, str(tmp_path), progress=False)
    table = read_table(version)
    assert table.schema.remove_metadata() == KERNELSYNTH_SCHEMA
    assert KERNELSYNTH_SCHEMA.names[: len(CANONICAL_SCHEMA)] == CANONICAL_SCHEMA.names
    assert version.dataset == "kernelsynth" and version.num_rows == 10
    assert [p["rows"] for p in version.manifest["parts"]] == [10]
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        direct = generate_series(cfg, i)
        values = np.asarray(row["target"], dtype=np.float32)
        np.testing.assert_array_equal(values, direct.values.astype(np.float32))
        assert row["series_id"] == f"kernelsynth/{i:09d}" and row["source"] == "kernelsynth"
        assert row["domain"] == "synthetic" and row["freq"] is None and row["length"] == 32
        assert row["start"].isoformat() == "2000-01-01T00:00:00"
        assert row["content_hash"] == content_hash(values)
        assert json.loads(row["attributes"]) == {"kernel": direct.kernel, "seed": 11, "index": i, "redraws": 0}
        assert row["kernel"] == direct.kernel
    assert len({r["content_hash"] for r in rows}) == 10
    assert sum(version.manifest["stats"]["routes"].values()) >= 10
    assert not (tmp_path / "_work" / "kernelsynth" / version.version_id).exists()


def test_workers_and_chunking_do_not_change_a_byte(tmp_path: Path) -> None:
    base = KernelSynthConfig(n_series=40, **SMALL)
    one = synthesize(base, str(tmp_path / "one"), progress=False)
    two = synthesize(base.model_copy(update={"workers": 2, "chunk_size": 5}), str(tmp_path / "two"), progress=False)
    assert one.version_id == two.version_id
    assert len(one.manifest["parts"]) == 3  # 16 + 16 + 8 rows
    assert part_hashes(one) == part_hashes(two)
    assert read_table(one).equals(read_table(two))
    other = synthesize(base.model_copy(update={"seed": 12}), str(tmp_path / "one"), progress=False)
    assert other.version_id != one.version_id
    assert not np.array_equal(read_table(one)["content_hash"].to_numpy(), read_table(other)["content_hash"].to_numpy())


def test_rerun_returns_the_published_version_without_work(tmp_path: Path, monkeypatch) -> None:
    cfg = KernelSynthConfig(n_series=12, **SMALL)
    first = synthesize(cfg, str(tmp_path), progress=False)
    manifest = Path(first.folder_url) / "_manifest.json"
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rerun must not compute or write")

    monkeypatch.setattr(ks, "run_units", no_work)
    monkeypatch.setattr(ks, "VersionWriter", no_work)
    again = synthesize(cfg.model_copy(update={"workers": 2}), str(tmp_path), progress=True)
    assert again.version_id == first.version_id and again.manifest == first.manifest
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert manifest.exists()


def test_a_failed_run_resumes_from_its_chunks(tmp_path: Path) -> None:
    cfg = KernelSynthConfig(n_series=30, **SMALL)  # chunks of 7: 0..4
    work = tmp_path / "resume" / "_work" / "kernelsynth" / ks.kernelsynth_version_id(cfg)
    work.mkdir(parents=True)
    (work / "chunk-000002.parquet").mkdir()  # chunk 2 cannot be written: the stage fails on it
    one_at_a_time = cfg.model_copy(update={"workers": 1})  # chunks 0 and 1 finish before 2 fails; 3, 4 never start
    with pytest.raises(StageWorkError, match=r"kernelsynth: chunk 2 \(series 14..20\) failed: IsADirectoryError"):
        synthesize(one_at_a_time, str(tmp_path / "resume"), progress=False)
    (work / "chunk-000002.parquet").rmdir()
    kept = {p.name: p.stat().st_mtime_ns for p in work.glob("chunk-*.parquet")}
    assert sorted(kept) == ["chunk-000000.parquet", "chunk-000001.parquet"]
    assert not (tmp_path / "resume" / "kernelsynth" / ks.kernelsynth_version_id(cfg) / "_manifest.json").exists()

    version = synthesize(cfg, str(tmp_path / "resume"), progress=False)
    stats = version.manifest["stats"]
    assert stats["chunks_reused"] == 2 and stats["chunks_computed"] == 3
    assert sum(stats["ray_nodes"].values()) == 3
    fresh = synthesize(cfg, str(tmp_path / "fresh"), progress=False)
    assert fresh.manifest["stats"]["chunks_computed"] == 5 and sum(fresh.manifest["stats"]["ray_nodes"].values()) == 5
    assert part_hashes(version) == part_hashes(fresh)
    assert read_table(version).equals(read_table(fresh))


def test_chunks_of_another_chunking_are_recomputed(tmp_path: Path) -> None:
    cfg = KernelSynthConfig(n_series=20, **SMALL)
    work = os.path.join(tmp_path, "_work", "kernelsynth", ks.kernelsynth_version_id(cfg))
    ks.compute_chunk(cfg.model_copy(update={"chunk_size": 5}).model_dump(mode="json"), 1, work, None)
    version = synthesize(cfg, str(tmp_path), progress=False)
    assert version.manifest["stats"]["chunks_reused"] == 0
    fresh = synthesize(cfg, str(tmp_path / "fresh"), progress=False)
    assert part_hashes(version) == part_hashes(fresh)


def test_jitter_and_memory_filesystem_refused(tmp_path: Path, memory_root: str) -> None:
    cfg = KernelSynthConfig(n_series=9, jitter=0.5, **SMALL)
    version = synthesize(cfg, str(tmp_path), progress=False)
    assert version.num_rows == 9
    assert version.manifest["stats"]["routes"]["jitter"] == 9
    table = read_table(version)
    assert isinstance(table, pa.Table) and table["kernel"][0].as_py() == generate_series(cfg, 0).kernel
    with pytest.raises(ValueError, match="memory:// is private to one process"):
        synthesize(cfg, memory_root, progress=False)
    assert not fsspec.filesystem("memory").exists(f"{memory_root}/kernelsynth")
