"""The layers of the tree: lower layers never import higher ones, workers never import devtools.

Read from the source with `ast`, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each layer may import itself and the layers after it, never those before it.
LAYERS = ("devtools", "pipelines", "models", "transforms")


def imported_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_a_layer_imports_no_layer_above_it(layer):
    above = set(LAYERS[:LAYERS.index(layer)])
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & above)
                 for path in (ROOT / layer).rglob("*.py")}
    assert {path: packages for path, packages in offenders.items() if packages} == {}


def test_transforms_see_no_model_code():
    """The scoring step is handed its model handler; transforms never reach into models/."""
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "transforms").rglob("*.py")
                 if "models" in imported_packages(path)]
    assert offenders == []
