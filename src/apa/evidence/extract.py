"""Evidence for a whole manifest (`apa evidence`): resumable, split over worker processes.

The acoustic model is single-threaded and CPU-bound (about 0.04 CPU-seconds per second of
audio), so the work is split over ``jobs`` local processes, each with its own decoder,
instead of over torchrun ranks: a 5,000-clip corpus takes minutes on one machine. Records
come back in manifest order and are appended (fsynced) in chunks; a clip that cannot be
read or aligned is recorded as such (``problem`` / ``aligned: false``) and never stops the run.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.evidence.acoustic import clip_evidence, failed_record
from apa.evidence.store import evidence_path, missing
from apa.predictions import append_records, read_records, rewrite_in_order

def default_jobs() -> int:
    """Worker processes when none are asked for: the CPU count, at most 8."""
    return min(os.cpu_count() or 1, 8)


def utterance_evidence(audio_path: str, word_phones: list[list[str]], utt_id: str) -> dict:
    """One utterance's record (in a worker process, with its own shared model); a clip that
    cannot be used gives a record with its ``problem`` instead of an exception, so one bad
    clip never stops a corpus."""
    from apa.data.audio import load_audio

    try:
        audio = load_audio(audio_path)
    except ApaError as e:
        return {"id": utt_id, **failed_record(str(e))}
    return {"id": utt_id, **clip_evidence(audio, word_phones)}


@dataclass
class ExtractSummary:
    total: int
    new: int
    failed_alignments: int  # of the whole file
    problems: int           # clips that could not be used at all
    cpu_seconds: float
    audio_seconds: float


def extract_manifest(utts: Sequence[Utterance], out: str | os.PathLike | None, manifest: str | os.PathLike,
                     jobs: int = 1, progress: bool = True, chunk: int = 16) -> ExtractSummary:
    """Compute the evidence of every utterance not yet in ``out`` (default: beside ``manifest``)."""
    import resource

    from tqdm.auto import tqdm

    if jobs < 1:
        raise ApaError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out) if out is not None else evidence_path(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    read_records(out, repair=True)  # cut a line half-written by a crash before appending
    todo = missing(utts, out)
    cpu_before = _cpu_seconds(resource)
    args = [(str(u.audio_path), [list(w.phones) for w in u.words], u.id) for u in todo]
    with out.open("a", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc="evidence", unit="utt", disable=not progress or not todo, file=sys.stderr) as bar:
        if jobs == 1:
            results = (utterance_evidence(*a) for a in args)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=jobs)
            results = pool.map(utterance_evidence, *zip(*args), chunksize=4) if args else iter(())
        try:
            batch: list[dict] = []
            for record in results:
                batch.append(record)
                if len(batch) == chunk:
                    append_records(f, out, batch, what="evidence")
                    bar.update(len(batch))
                    batch = []
            append_records(f, out, batch, what="evidence")
            bar.update(len(batch))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    records = read_records(out)
    rewrite_in_order(out, records, utts)
    wanted, new = {u.id for u in utts}, {u.id for u in todo}
    mine = [r for r in records if r["id"] in wanted]
    return ExtractSummary(total=len(utts), new=len(todo),
                          failed_alignments=sum(1 for r in mine if not r.get("aligned")),
                          problems=sum(1 for r in mine if r.get("problem")),
                          cpu_seconds=_cpu_seconds(resource) - cpu_before,
                          audio_seconds=sum(r.get("seconds") or 0.0 for r in mine if r["id"] in new))


def _cpu_seconds(resource) -> float:
    """CPU time of this process and of its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def with_evidence(utts: Sequence[Utterance], manifest: str | os.PathLike, out: str | os.PathLike | None = None,
                  jobs: int = 1, progress: bool = True) -> list[Utterance]:
    """``utts`` with their evidence attached, computing (and storing) only what the evidence file
    beside ``manifest`` (or ``out``) lacks: the commands that need evidence call this."""
    from apa.evidence.store import attach

    path = Path(out) if out is not None else evidence_path(manifest)
    if missing(utts, path):
        extract_manifest(utts, path, manifest, jobs=jobs, progress=progress)
    return attach(utts, path)
