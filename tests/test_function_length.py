"""No function in the product's packages is longer than the limit: long ones are split into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("corpus", "infra", "training", "adaptation", "pipelines")
MAX_LINES = 80


def long_functions(source: str, filename: str, limit: int = MAX_LINES) -> list[tuple[str, int, str, int]]:
    """(file, first line, qualified name, lines) of every function or method longer than ``limit`` lines.

    A function's length runs from its ``def`` (decorators excluded) to its last line, docstring included.
    """
    found: list[tuple[str, int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((filename, child.lineno, name, length))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=filename), "")
    return found


def package_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_walker_finds_long_functions_methods_and_nested_ones() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))  # def line + 81 lines = 82
    source = (
        f"def long_one():\n{body}\n\n"
        f"def short_one():\n    return 1\n\n"
        f"class Holder:\n    def method(self):\n{body.replace('    ', '        ')}\n\n"
        f"def outer():\n    def inner():\n        pass\n    return inner\n\n"
        f"async def long_async():\n{body}\n"
    )
    found = long_functions(source, "planted.py")
    assert [(line, name, length) for _, line, name, length in found] == [
        (1, "long_one", 82),
        (88, "Holder.method", 82),
        (176, "long_async", 82),
    ]
    exactly_80 = "def f():\n" + "\n".join(["    pass"] * 79)
    assert long_functions(exactly_80, "edge.py") == []
    assert long_functions(exactly_80, "edge.py", limit=79) == [("edge.py", 1, "f", 80)]


def test_walker_sees_the_product_packages() -> None:
    files = package_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} == set(PACKAGES)
    assert len(files) > 50


def test_no_function_over_the_limit() -> None:
    offenders = [
        hit for path in package_files()
        for hit in long_functions(path.read_text(), str(path.relative_to(ROOT)))
    ]
    if offenders:
        pytest.fail(f"{len(offenders)} function(s) over {MAX_LINES} lines; split them into named steps:\n"
                    + "\n".join(f"{f}:{line} {name} ({n} lines)" for f, line, name, n in offenders))
