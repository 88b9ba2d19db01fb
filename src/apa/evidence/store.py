"""Evidence files: one JSON line per utterance, beside its manifest, so that training and
prediction never recompute it.

``data/so762_test.jsonl`` -> ``data/so762_test.evidence.jsonl``; a line is
``{"id": ..., "evidence": "gop", "version": 1, "aligned": true, ...}`` (apa.evidence.acoustic).
Lines are appended and fsynced as they are computed (a crash loses at most the last few), a
rerun computes only the ids that are missing or were computed by an older version, and a
finished file is rewritten in manifest order (apa.predictions' resumable-file helpers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.evidence.acoustic import NAME, VERSION
from apa.predictions import read_records

KINDS = (NAME,)


def evidence_path(manifest: str | os.PathLike) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.evidence{manifest.suffix or '.jsonl'}")


def check_kind(kind: str | None) -> str | None:
    """``None`` (no evidence) or a known kind; anything else is refused with the choices."""
    if kind in (None, "", "none"):
        return None
    if kind not in KINDS:
        raise ApaError(f"unknown evidence {kind!r}; choose one of: {', '.join(KINDS)} (or none)")
    return kind


def is_current(record: dict) -> bool:
    return record.get("evidence") == NAME and record.get("version") == VERSION


def read_evidence(path: str | os.PathLike) -> dict[str, dict]:
    """id -> current evidence record of a file (stale or missing ones are left out)."""
    return {r["id"]: r for r in read_records(path) if is_current(r)}


def attach(utts: Sequence[Utterance], path: str | os.PathLike) -> list[Utterance]:
    """Give every utterance its evidence record from ``path``; ApaError names what is missing."""
    found = read_evidence(path)
    missing = [u.id for u in utts if u.id not in found]
    if missing:
        raise ApaError(f"{len(missing)} utterance(s) have no current evidence in {path} (e.g. {missing[0]}); "
                       "compute it with `apa evidence MANIFEST [--out FILE]`")
    for utt in utts:
        utt.evidence = found[utt.id]
    return list(utts)


def missing(utts: Iterable[Utterance], path: str | os.PathLike) -> list[Utterance]:
    done = read_evidence(path)
    return [u for u in utts if u.id not in done]
