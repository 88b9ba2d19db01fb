"""Batched, resumable prediction over a manifest (`apa predict`).

Batches hold utterances of similar length (audio tokens + prompt tokens), so little compute
goes into padding; each batch is appended to the predictions file and flushed as soon as it
is decoded, so a crash loses at most one batch, and a rerun skips the ids already written.
When the run completes, the file is rewritten (atomically) in manifest order. The file
format is apa.predictions'. Several processes (torchrun) split the manifest
(predict_sharded), each into its own shard file (apa.inference.sharding).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from apa.collate import prompt_text
from apa.data.audio import audio_info, load_audio
from apa.data.manifest import Utterance
from apa.distributed import Processes
from apa.errors import ApaError
from apa.inference.decoding import DecodeStats, decode_batch, model_device_dtype, resolve_decoding
from apa.inference.sharding import merge_shards, shard_files, shard_path
from apa.predictions import append_records, prediction_record, read_records, rewrite_in_order
from apa.tasks import Task


def estimated_length(processor, utt: Utterance, task: Task) -> int:
    """Prompt length in tokens after audio expansion (for sorting utterances into batches)."""
    duration = utt.duration if utt.duration is not None else audio_info(utt.audio_path)[0]
    text_tokens = len(processor.tokenizer(prompt_text(processor, task, utt), add_special_tokens=False)["input_ids"])
    return text_tokens + processor.audio_token_count(duration)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory errors show at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class PredictSummary:
    total: int      # utterances asked for
    new: int        # predicted in this run
    skipped: int    # already in the output file
    parsed: int     # outputs (of the asked-for utterances) that parse without problems
    calls_per_batch: list[int] = field(default_factory=list)  # sequential model calls of each batch decoded

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.total if self.total else float("nan")

    def calls_text(self) -> str:
        """'model calls per batch: median M, most N (B batches)', or '' when nothing was decoded."""
        calls = sorted(self.calls_per_batch)
        if not calls:
            return ""
        return (f"sequential model calls per batch: median {calls[len(calls) // 2]}, most {calls[-1]} "
                f"({len(calls)} batches)")


def count_parsed(records: Sequence[dict], utts: Sequence[Utterance]) -> int:
    wanted = {utt.id for utt in utts}
    return sum(1 for r in records if r["id"] in wanted and not r.get("problems"))


def append_predictions(model, processor, todo: Sequence[Utterance], task: Task, path: Path, batch_size: int,
                       max_new_tokens: int | None, decoding: str, progress: bool, desc: str = "predict") -> DecodeStats:
    """Decode ``todo`` in length-sorted batches, appending each batch to ``path`` (fsynced);
    logs each batch's sequential model calls (on stderr) and returns them."""
    from tqdm.auto import tqdm

    stats = DecodeStats()
    lengths = [estimated_length(processor, utt, task) for utt in todo]
    batches = length_sorted_batches(lengths, batch_size)
    with path.open("a", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress or not todo,
                 file=sys.stderr) as bar:
        for indices in batches:
            batch_utts = [todo[i] for i in indices]
            audios = [load_audio(utt.audio_path) for utt in batch_utts]
            decoded = decode_batch(model, processor, batch_utts, task, audios=audios,
                                   max_new_tokens=max_new_tokens, decoding=decoding, stats=stats)
            append_records(f, path, (prediction_record(utt, task, result) for utt, result in zip(batch_utts, decoded)))
            bar.update(len(batch_utts))
            bar.write(f"batch {stats.batches}: {len(batch_utts)} utterances, {stats.calls_per_batch[-1]} sequential "
                      f"model calls ({decoding})", file=sys.stderr)
    return stats


def predict_manifest(model, processor, utts: Sequence[Utterance], task: Task, out_path: str | os.PathLike,
                     batch_size: int = 8, max_new_tokens: int | None = None, decoding: str = "free",
                     progress: bool = True, processes: Processes | None = None) -> PredictSummary:
    """Predict every utterance not yet in ``out_path``; append per batch; resumable.

    With several ``processes`` (torchrun / accelerate launch) this process predicts its
    share into its own shard file and rank 0 merges the shards: see
    predict_sharded. Shard files left beside ``out_path`` by an
    interrupted multi-process run are merged in first, so a single-process rerun resumes
    them too.
    """
    if batch_size < 1:
        raise ApaError(f"--batch-size must be at least 1, got {batch_size}")
    resolve_decoding(decoding)
    if processes is not None and processes.several:
        return predict_sharded(model, processor, utts, task, out_path, processes, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, decoding=decoding, progress=progress)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if shard_files(out_path):
        merge_shards(out_path, utts)
    done = {r["id"] for r in read_records(out_path, repair=True)}
    todo = [utt for utt in utts if utt.id not in done]
    stats = append_predictions(model, processor, todo, task, out_path, batch_size, max_new_tokens, decoding, progress)

    records = read_records(out_path)
    rewrite_in_order(out_path, records, utts)
    return PredictSummary(total=len(utts), new=len(todo), skipped=len(utts) - len(todo),
                          parsed=count_parsed(records, utts), calls_per_batch=stats.calls_per_batch)


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
