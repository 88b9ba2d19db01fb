"""The import graph points one way: data -> tasks, prompts, targets -> backbones, collate ->
training, inference, evaluation -> the service and experiments -> commands. A module may import
from its own layer or a lower one, never a higher one (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "apa"
# (module prefix, layer), the longest prefix wins.
LAYERS = [
    ("apa.errors", 0), ("apa.files", 0), ("apa.config", 0), ("apa.distributed", 0),
    ("apa.data", 1),
    ("apa.tasks", 2), ("apa.prompts", 2), ("apa.targets", 2), ("apa.predictions", 2), ("apa.evidence", 2),
    ("apa.backbones", 3), ("apa.collate", 3), ("apa.forward", 3),
    ("apa.training", 4), ("apa.inference", 4), ("apa.evaluation", 4), ("apa.baselines", 4),
    ("apa.serve", 5), ("apa.experiments", 5),
    ("apa.commands", 6), ("apa.cli", 6), ("apa", 0),
]


def layer(module: str) -> int:
    return max((prefix for prefix in LAYERS if module == prefix[0] or module.startswith(prefix[0] + ".")),
               key=lambda prefix: len(prefix[0]))[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("apa"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("apa")}
    return found


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        for target in imports(path):
            if layer(target) > layer(name):
                wrong.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_import_each_other():
    graph = {module_name(path): imports(path) for path in SRC.rglob("*.py")}
    circles = {tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())}
    assert not circles, f"modules that import each other: {sorted(circles)}"
