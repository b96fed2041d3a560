"""kova_core is pure: it imports no driver, no I/O and no clock (DESIGN section 2)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import kova_core

FORBIDDEN = {
    "kova_sim", "kova_live", "asyncio", "socket", "time", "random", "sqlalchemy", "aiohttp",
    "docker", "simpy", "subprocess", "threading", "requests", "os", "io", "pathlib", "datetime",
    "logging", "urllib", "http", "shutil", "tempfile", "sqlite3", "psycopg",
}  # fmt: skip
CORE = pathlib.Path(kova_core.__file__).parent
MODULES = sorted(CORE.rglob("*.py"))


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in {
            "open",
            "__import__",
            "print",
            "input",
        }:
            found.append((node.lineno, f"{node.func.id}()"))  # type: ignore[attr-defined]
    return found


def test_the_scan_sees_the_core() -> None:
    assert len(MODULES) >= 10 and CORE.name == "kova_core"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: pathlib.Path) -> None:
    bad = [
        f"{path.name}:{line} uses {name}"
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN or name.endswith("()")
    ]
    assert not bad, "kova_core must stay pure: " + "; ".join(bad)


def test_the_scan_catches_an_impure_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom kova_sim import x\nprint('hi')\n")
    names = [n for _, n in imported_modules(sample)]
    assert names == ["time", "kova_sim", "print()"]
