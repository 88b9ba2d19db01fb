"""Kaldi-style data files (``wav.scp``, ``text``, ``utt2spk``, ``spk2age``, ...): one ``KEY VALUE``
per line, read with every problem named by file and line."""

from __future__ import annotations

from pathlib import Path


def read_kaldi_map(path: Path, problems: list[str], required: bool = True
                   ) -> dict[str, tuple[str, int]] | None:
    """``KEY VALUE`` lines (tab or space separated) -> {key: (value, line number)}.

    Problems (missing file, malformed or duplicate line) are appended to ``problems``; None is
    returned when the file cannot be read at all (or is absent and not required).
    """
    if not path.is_file():
        if required:
            problems.append(f"{path}: file does not exist; the official layout has train/ and test/ "
                            "each with wav.scp, text, utt2spk, spk2age and spk2gender: "
                            "pass --root the folder that holds them")
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read ({e}); copy the file again from the release")
        return None
    out: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            problems.append(f"{path}:{lineno}: expected 'KEY VALUE', got {line.strip()!r}; "
                            "add the missing value or delete the line")
            continue
        key, value = parts[0], parts[1].strip()
        if key in out:
            problems.append(f"{path}:{lineno}: duplicate key {key!r} (first on line {out[key][1]}); "
                            "delete one of the two lines")
            continue
        out[key] = (value, lineno)
    return out
