"""The README's two commands stay true: CI runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks[:2] for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    install, test = _commands()
    assert "pip install torch==2.13.0" in install and 'pip install -e ".[dev]"' in install
    assert install.endswith("apa demo")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines
    assert "python -m pip install --quiet torch==2.13.0" in ci_lines


def test_every_documented_command_exists():
    from apa.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    for name in re.findall(r"`apa ([a-z-]+)", readme):
        assert name in COMMANDS, name
    for name in COMMANDS:
        assert f"apa {name}" in readme, f"apa {name} is not documented in the README"


def test_the_layout_names_every_module():
    """Every source module appears in the README's layout (under its folder), and every file the
    layout names exists."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Layout")
    layout = text[start:text.index("\n## ", start)]
    src = ROOT / "src" / "apa"
    for path in sorted(src.rglob("*.py")):
        relative = path.relative_to(src)
        if path.name == "__init__.py" or relative.parts[0] == "commands":
            continue
        if len(relative.parts) == 1:
            assert relative.name in layout, f"{relative} is not in the README's layout"
            continue
        folder = "/".join(relative.parts[:-1]) + "/"
        assert folder in layout, f"{folder} is not in the README's layout"
        assert path.stem in layout[layout.index(folder):], f"{relative} is not in the README's layout"
    for name in re.findall(r"\b([a-z_0-9]+\.py)\b", layout):
        assert list(src.rglob(name)) or (ROOT / "bench" / name).is_file(), f"the layout names {name}"
