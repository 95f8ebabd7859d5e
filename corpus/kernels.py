"""The KernelSynth kernel bank and kernel expressions, evaluated with numpy on a 1-D grid.

Why our own evaluation rather than scikit-learn's kernel objects: the synthesizer needs each base kernel in
three shapes (the full matrix, the first row of a stationary kernel, the diagonal) and composes thousands of
them per second; scikit-learn's objects give only the full matrix. The formulas are scikit-learn's exactly
(``ExpSineSquared``, ``DotProduct``, ``RBF``, ``RationalQuadratic``, ``WhiteKernel``, ``ConstantKernel`` with
every other hyper-parameter at its default), and the tests hold each one to ``kernel(X)`` within 1e-10.
:meth:`BaseKernel.to_sklearn` and :meth:`KernelExpr.to_sklearn` give the scikit-learn object for checks and
for the reference baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal

import numpy as np

Family = Literal["periodic", "linear", "rbf", "rational_quadratic", "white", "constant"]
Op = Literal["+", "*"]

# Seasonal periods in samples, grouped as the reference lists them. 4 appears three times (weekly, monthly,
# quarterly), so that period is drawn three times as often: kept on purpose, as in the reference bank.
PERIODS_HOURLY = (24, 48, 96, 168, 336, 672)
PERIODS_DAILY = (7, 14, 30, 60, 365, 730)
PERIODS_WEEKLY = (4, 26, 52)
PERIODS_MONTHLY = (4, 6, 12)
PERIODS_QUARTERLY = (4, 40)
PERIODS_YEARLY = (10,)
PERIODS = PERIODS_HOURLY + PERIODS_DAILY + PERIODS_WEEKLY + PERIODS_MONTHLY + PERIODS_QUARTERLY + PERIODS_YEARLY
LINEAR_SIGMA0 = (0.0, 1.0, 10.0)
RBF_LENGTH_SCALES = (0.1, 1.0, 10.0)
RQ_ALPHAS = (0.1, 1.0, 10.0)
WHITE_NOISE_LEVELS = (0.1, 1.0)
CONSTANT_VALUES = (1.0,)
# scikit-learn defaults of the hyper-parameters the bank does not set.
PERIODIC_LENGTH_SCALE = 1.0
RQ_LENGTH_SCALE = 1.0


def _num(value: float) -> str:
    """``0.1`` -> ``0.1``, ``1.0`` -> ``1``: the shortest exact spelling, for readable labels."""
    return f"{value:g}"


@dataclass(frozen=True)
class BaseKernel:
    """One kernel of the bank: a scikit-learn family and the one parameter the bank varies.

    ``param`` is the periodicity (periodic, in units of the unit-interval grid), sigma_0 (linear), the length
    scale (rbf), alpha (rational quadratic), the noise level (white) or the constant value (constant).
    ``period_samples`` keeps the integer period of a periodic kernel for its label.
    """

    family: Family
    param: float
    period_samples: int | None = None
    length: int | None = None

    @property
    def stationary(self) -> bool:
        """A function of x - x' only, so a Toeplitz matrix on a uniform grid (all but the linear kernel)."""
        return self.family != "linear"

    @property
    def label(self) -> str:
        if self.family == "periodic":
            return f"Periodic({self.period_samples}/{self.length})"
        if self.family == "linear":
            return f"Linear({_num(self.param)})"
        if self.family == "rbf":
            return f"RBF({_num(self.param)})"
        if self.family == "rational_quadratic":
            return f"RQ(alpha={_num(self.param)})"
        if self.family == "white":
            return f"White({_num(self.param)})"
        return f"Constant({_num(self.param)})"

    def profile(self, d: np.ndarray) -> np.ndarray:
        """k as a function of the distance ``d = |x - x'|`` for the stationary families.

        The white kernel is 1 at distance 0 and 0 elsewhere times its noise level (scikit-learn's
        ``WhiteKernel(X)`` is ``noise_level * I``).
        """
        d = np.asarray(d, dtype=np.float64)
        if self.family == "periodic":
            return np.exp(-2.0 * (np.sin(np.pi * d / self.param) / PERIODIC_LENGTH_SCALE) ** 2)
        if self.family == "rbf":
            return np.exp(-0.5 * (d / self.param) ** 2)
        if self.family == "rational_quadratic":
            return (1.0 + d**2 / (2.0 * self.param * RQ_LENGTH_SCALE**2)) ** (-self.param)
        if self.family == "white":
            return np.where(d == 0.0, self.param, 0.0)
        if self.family == "constant":
            return np.full_like(d, self.param)
        raise ValueError(f"{self.label}: not a stationary kernel")

    def diagonal(self, x: np.ndarray) -> np.ndarray:
        """k(x_i, x_i) for every grid point (what a product with a white kernel keeps)."""
        if self.family == "linear":
            return self.param**2 + x * x
        return np.full(x.shape, float(self.profile(np.zeros(1))[0]))

    def matrix(self, x: np.ndarray) -> np.ndarray:
        """k(x, x) on the 1-D points ``x``, with scikit-learn's formula (pairwise distances, no Toeplitz trick)."""
        x = np.asarray(x, dtype=np.float64)
        if self.family == "linear":
            return self.param**2 + np.multiply.outer(x, x)
        if self.family == "white":
            return self.param * np.eye(x.size)
        return self.profile(np.abs(np.subtract.outer(x, x)))

    def to_sklearn(self) -> Any:
        """The scikit-learn kernel object with the same formula (for tests and the reference baseline)."""
        from sklearn.gaussian_process import kernels as sk

        if self.family == "periodic":
            return sk.ExpSineSquared(length_scale=PERIODIC_LENGTH_SCALE, periodicity=self.param)
        if self.family == "linear":
            return sk.DotProduct(sigma_0=self.param)
        if self.family == "rbf":
            return sk.RBF(length_scale=self.param)
        if self.family == "rational_quadratic":
            return sk.RationalQuadratic(length_scale=RQ_LENGTH_SCALE, alpha=self.param)
        if self.family == "white":
            return sk.WhiteKernel(noise_level=self.param)
        return sk.ConstantKernel(constant_value=self.param)


def kernel_bank(length: int) -> tuple[BaseKernel, ...]:
    """The 33 kernels of the reference bank for a grid of ``length`` points (periodicity = period / length)."""
    bank = [BaseKernel("periodic", p / length, period_samples=p, length=length) for p in PERIODS]
    bank += [BaseKernel("linear", s) for s in LINEAR_SIGMA0]
    bank += [BaseKernel("rbf", s) for s in RBF_LENGTH_SCALES]
    bank += [BaseKernel("rational_quadratic", a) for a in RQ_ALPHAS]
    bank += [BaseKernel("white", n) for n in WHITE_NOISE_LEVELS]
    bank += [BaseKernel("constant", c) for c in CONSTANT_VALUES]
    return tuple(bank)


BANK_SIZE = len(kernel_bank(1))


@dataclass(frozen=True)
class KernelExpr:
    """A composition ``((k0 op1 k1) op2 k2) ...`` folded left to right, as the reference composes.

    ``kernels`` are indices into the bank, ``ops`` has one fewer entry than ``kernels``.
    """

    kernels: tuple[int, ...]
    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        if not self.kernels or len(self.ops) != len(self.kernels) - 1:
            raise ValueError(f"KernelExpr: {len(self.kernels)} kernels need {len(self.kernels) - 1} ops")

    def label(self, bank: tuple[BaseKernel, ...]) -> str:
        """A readable formula, e.g. ``(RBF(0.1) + Periodic(24/1024)) * Linear(1)``.

        The left operand is parenthesised only when it is a sum and the step is a product, so the usual
        precedence reads back the same left fold.
        """
        text, top = bank[self.kernels[0]].label, None
        for op, k in zip(self.ops, self.kernels[1:], strict=True):
            if op == "*" and top == "+":
                text = f"({text})"
            text, top = f"{text} {op} {bank[k].label}", op
        return text

    def monomials(self) -> list[tuple[int, ...]]:
        """The expression expanded into a sum of products of base kernels.

        ``(a + b) * c`` is ``a*c + b*c``. Why: independent Gaussian draws add their covariances, so each
        product is sampled on its own, by the cheapest exact route for its shape.
        """
        terms: list[tuple[int, ...]] = [(self.kernels[0],)]
        for op, k in zip(self.ops, self.kernels[1:], strict=True):
            terms = [*terms, (k,)] if op == "+" else [(*t, k) for t in terms]
        return terms

    def matrix(self, bank: tuple[BaseKernel, ...], x: np.ndarray) -> np.ndarray:
        """The composed covariance on ``x``, evaluated by the left fold (the reference's definition)."""
        out = bank[self.kernels[0]].matrix(x)
        for op, k in zip(self.ops, self.kernels[1:], strict=True):
            out = out + bank[k].matrix(x) if op == "+" else out * bank[k].matrix(x)
        return out

    def to_sklearn(self, bank: tuple[BaseKernel, ...]) -> Any:
        """The same composition as a scikit-learn kernel (``Sum``/``Product`` nodes, left to right)."""
        first, *rest = [bank[k].to_sklearn() for k in self.kernels]
        pairs = zip(self.ops, rest, strict=True)
        return reduce(lambda acc, p: acc + p[1] if p[0] == "+" else acc * p[1], pairs, first)
