"""The direction of dependencies (DESIGN.md §2): data <- pretrain <- finetune <- spotting <- launch. Every module's
imports, at the top and inside functions, are read from its source; an import of a higher layer fails."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("data", "pretrain", "finetune", "spotting", "launch")


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations() -> list[str]:
    out = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((REPO / layer).rglob("*.py")):
            for package, line in imported_packages(path):
                if package in LAYERS and LAYERS.index(package) > rank:
                    out.append(f"{path.relative_to(REPO)}:{line} imports {package} (a higher layer than {layer})")
    return out


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    from spotting.spot import spot\n    import launch.demo\n")
    assert imported_packages(module) == {("numpy", 1), ("spotting", 4), ("launch", 5)}
