"""The shard files of `apa predict` across several processes: one per process, merged by rank 0.

`torchrun --nproc_per_node N -m apa.cli predict ... --out OUT.jsonl`: process r predicts
utterances r, r+N, ... (apa.distributed.Processes.take) into OUT.rank{r}-of-{N}.jsonl
(resumable like OUT.jsonl), then rank 0 merges every shard into OUT.jsonl in manifest
order and removes the shards. Ids already in OUT.jsonl are skipped by every process. The
shard files must be on a file system that rank 0 sees (one machine, or a shared folder).
The prediction itself (apa.inference.predict.predict_sharded) imports this module, never the
other way round.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from apa.data.manifest import Utterance
from apa.predictions import read_records, rewrite_in_order


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
