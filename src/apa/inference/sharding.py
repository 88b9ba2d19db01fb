"""`apa predict` across several processes: one shard per process, merged by rank 0.

`torchrun --nproc_per_node N -m apa.cli predict ... --out OUT.jsonl`: process r predicts
utterances r, r+N, ... (apa.distributed.Processes.take) into OUT.rank{r}-of-{N}.jsonl
(resumable like OUT.jsonl), then rank 0 merges every shard into OUT.jsonl in manifest
order and removes the shards. Ids already in OUT.jsonl are skipped by every process. The
shard files must be on a file system that rank 0 sees (one machine, or a shared folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from apa.data.manifest import Utterance
from apa.distributed import Processes
from apa.inference.decoding import model_device_dtype
from apa.inference.predict import PredictSummary, append_predictions, count_parsed
from apa.predictions import read_records, rewrite_in_order
from apa.tasks import Task


def shard_path(out_path: str | os.PathLike, rank: int, world_size: int) -> Path:
    """OUT.jsonl -> OUT.rank0-of-2.jsonl (beside it)."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.rank{rank}-of-{world_size}{out_path.suffix}")


def shard_files(out_path: str | os.PathLike) -> list[tuple[Path, int, int]]:
    """(path, rank, world size) of every shard file beside ``out_path``, of any world size."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(out_path.stem) + r"\.rank(\d+)-of-(\d+)" + re.escape(out_path.suffix))
    found = []
    for path in out_path.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((path, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda item: (item[2], item[1]))


def merge_shards(out_path: str | os.PathLike, utts: Sequence[Utterance]) -> list[dict]:
    """Fold every shard file beside ``out_path`` into it: records of ``out_path`` first, then
    the shards' (an id already merged is not taken twice), in manifest order, written
    atomically; then the shard files are removed. Returns the merged records."""
    out_path = Path(out_path)
    shards = shard_files(out_path)
    records = read_records(out_path)
    seen = {r["id"] for r in records}
    for path, _, _ in shards:
        for record in read_records(path):
            if record["id"] not in seen:
                seen.add(record["id"])
                records.append(record)
    rewrite_in_order(out_path, records, utts)
    for path, _, _ in shards:
        path.unlink(missing_ok=True)
    return records


def predict_sharded(model, processor, utts: Sequence[Utterance], task: Task, out_path: str | os.PathLike,
                    processes: Processes, batch_size: int = 8, max_new_tokens: int | None = None,
                    decoding: str = "free", progress: bool = True) -> PredictSummary:
    """One process's part of a multi-process prediction.

    Process r of N predicts its share minus the ids already in ``out_path`` (or in shard
    files of an earlier run with another N) into OUT.rank{r}-of-{N}.jsonl, appended per batch
    and resumable exactly like ``out_path`` itself. When every process is done (they wait for
    each other), rank 0 merges the shards into ``out_path`` in manifest order
    (``merge_shards``), and every process returns once the merged file is written. Joins the
    process group first when needed (on the model's device).

    Rank 0 returns the summary of the whole manifest; the other ranks that of their share.
    """
    created = processes.join(model_device_dtype(model)[0])
    try:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        own = shard_path(out_path, processes.rank, processes.world_size)
        # --out is only written by the merge at the end, so every process reads the same ids.
        done = {r["id"] for r in read_records(out_path)}
        done |= {r["id"] for r in read_records(own, repair=True)}
        for path, _, world_size in shard_files(out_path):
            if world_size != processes.world_size:  # left by an earlier run with another process count
                done |= {r["id"] for r in read_records(path)}
        mine = processes.take(utts)
        todo = [utt for utt in mine if utt.id not in done]
        stats = append_predictions(model, processor, todo, task, own, batch_size, max_new_tokens, decoding,
                                   progress=progress and processes.is_main,
                                   desc=f"predict (rank 0 of {processes.world_size})")

        gathered = processes.gather((len(todo), stats.calls_per_batch))  # waits for every shard
        if processes.is_main:
            records = merge_shards(out_path, utts)
            new = sum(n for n, _ in gathered)
            summary = PredictSummary(total=len(utts), new=new, skipped=len(utts) - new,
                                     parsed=count_parsed(records, utts),
                                     calls_per_batch=[c for _, calls in gathered for c in calls])
        else:
            summary = PredictSummary(total=len(mine), new=len(todo), skipped=len(mine) - len(todo),
                                     parsed=count_parsed(read_records(own), mine),
                                     calls_per_batch=stats.calls_per_batch)
        processes.barrier()  # the merged file is complete when any process returns
    finally:
        if created:
            processes.leave()
    return summary
