"""Signposts point at things that exist: every `apa.module[.name]` and `src/apa/...` path named
in the sources, docs and README resolves, so a moved function cannot leave a stale pointer."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXTS = sorted([*ROOT.glob("src/apa/**/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md", *ROOT.glob("bench/*.py")])
DOTTED = re.compile(r"\bapa(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
PATH = re.compile(r"\bsrc/apa/[A-Za-z0-9_/]+(?:\.py)?/?")


def _module_file(dotted: str) -> bool:
    return (ROOT / "src" / (dotted.replace(".", "/") + ".py")).is_file()


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            # a module that exists but needs an optional dependency (vLLM) resolves by its file
            if cut == len(parts) and parts[0] == "apa" and _module_file(dotted):
                return True
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def _mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
    found = set()
    for path in TEXTS:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.add((str(path.relative_to(ROOT)), match.group(0).rstrip(".")))
    return sorted(found)


@pytest.mark.parametrize("where, dotted", _mentions(DOTTED))
def test_dotted_names_resolve(where, dotted):
    assert _resolves(dotted), f"{where} names {dotted}, which does not exist"


@pytest.mark.parametrize("where, path", _mentions(PATH))
def test_source_paths_exist(where, path):
    assert (ROOT / path).exists(), f"{where} names {path}, which does not exist"
