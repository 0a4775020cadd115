"""The layers of rules/ import downwards only, as the folders read: loading -> analysis ->
execution / storage / cache, all of them into core; core imports nothing else of rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "rules"
# What each layer may import besides itself. The top-level modules (build,
# workspace, config, ...) orchestrate and may import anything.
ALLOWED = {
    "core": set(),
    "loading": {"core"},
    "analysis": {"core", "loading"},
    "execution": {"core"},
    "storage": {"core"},
    "cache": {"core"},
}


def _imports(path: Path) -> set[str]:
    """The rules.* modules a file imports (at any depth: lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("rules."))
        elif isinstance(node, ast.ImportFrom) and node.module == "rules":
            found.update(f"rules.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rules."):
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    allowed = ALLOWED[layer] | {layer}
    wrong = []
    for path in sorted((RULES / layer).rglob("*.py")):
        for module in sorted(_imports(path)):
            # `import rules` alone gives the version; it is not a layer.
            parts = module.split(".")
            if len(parts) > 1 and parts[1] not in allowed:
                wrong.append(f"{path.relative_to(RULES.parent)} imports {module}")
    assert wrong == []
