"""Batched greedy generation of score text, and resumable prediction over a manifest.

``predict_manifest`` writes one JSON line per utterance::

    {"id": "000010011", "output": "Sentence Scores: 8 9 9 10 8\\n...",
     "scores": {"sentence": {...}, "words": [...], "phones": [...]}, "problems": []}

Batches hold utterances of similar length (audio tokens + prompt tokens), so little
compute goes into padding; each batch is appended and flushed as soon as it is decoded, so
a crash loses at most one batch, and a rerun skips the ids already written. When the run
completes, the file is rewritten (atomically) in manifest order.

Decoding modes plug in at ``DECODERS``: a decoder takes (model, processor, batch, utts,
task, max_new_tokens) and returns one dict per row with the response text under "output"
and, when the mode computes them, continuous expected scores under "expected" (a ScoreSet
dict). The text is always read back with apa.targets.parse_scores, the one parser.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from apa.collate import build_generation_batch, move_to
from apa.data.audio import audio_info, load_audio
from apa.data.manifest import Utterance
from apa.errors import ApaError
from apa.prompts import prompt_text
from apa.targets import ScoreSet, format_scores, parse_scores
from apa.tasks import SCORE_RANGE, Task

AUDIO_TOKENS_PER_SECOND = 25  # Qwen2-Audio: 100 mel frames/s, /2 by conv, /2 by pooling


# --------------------------------------------------------------------------------------
# Lengths
# --------------------------------------------------------------------------------------

def widest_scores(utt: Utterance, task: Task) -> ScoreSet:
    """A ScoreSet with the widest value (10) in every field: the longest possible response."""
    top = int(SCORE_RANGE[1])
    return ScoreSet(sentence={a: top for a in task.sentence},
                    words=[{a: top for a in task.word} for _ in utt.words],
                    phones=[[top] * len(w.phones) for w in utt.words])


def default_max_new_tokens(processor, utt: Utterance, task: Task) -> int:
    """Token budget for free decoding: 1.5 x the longest well-formed response + 16, so a
    model that never stops is cut off instead of running forever."""
    text = format_scores(utt, task, widest_scores(utt, task))
    n = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + <|im_end|>
    return int(n * 1.5) + 16


def estimated_length(processor, utt: Utterance, task: Task) -> int:
    """Prompt length in tokens after audio expansion (for sorting utterances into batches)."""
    duration = utt.duration if utt.duration is not None else audio_info(utt.audio_path)[0]
    text_tokens = len(processor.tokenizer(prompt_text(task, utt), add_special_tokens=False)["input_ids"])
    return text_tokens + int(round(min(duration, 30.0) * AUDIO_TOKENS_PER_SECOND))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory errors show at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------

def _greedy_config(model, processor, max_new_tokens: int):
    """The model's generation config, made greedy, with end-of-turn and padding ids set."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature = None
    config.top_p = None
    config.top_k = None
    config.max_new_tokens = int(max_new_tokens)
    config.max_length = None
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if config.eos_token_id is None:
        config.eos_token_id = end
    elif isinstance(config.eos_token_id, int) and config.eos_token_id != end:
        config.eos_token_id = [config.eos_token_id, end]
    elif isinstance(config.eos_token_id, list) and end not in config.eos_token_id:
        config.eos_token_id = [*config.eos_token_id, end]
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def free_decode(model, processor, batch: dict, utts: Sequence[Utterance], task: Task,
                max_new_tokens: int) -> list[dict]:
    """Plain greedy decoding: the response texts (special tokens dropped, stripped)."""
    import torch

    config = _greedy_config(model, processor, max_new_tokens)
    with torch.inference_mode():
        sequences = model.generate(**batch, generation_config=config)
    new_tokens = sequences[:, batch["input_ids"].shape[1]:]
    texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [{"output": t.strip()} for t in texts]


Decoder = Callable[..., list[dict]]
# decoding mode -> decoder(model, processor, batch, utts, task, max_new_tokens) -> [{"output", ...}].
def _constrained(*args, **kwargs) -> list[dict]:
    from apa.inference.constrained import constrained_decode

    return constrained_decode(*args, **kwargs)


DECODERS: dict[str, Decoder] = {"free": free_decode, "constrained": _constrained}


def get_decoder(decoding: str) -> Decoder:
    if decoding not in DECODERS:
        raise ApaError(f"unknown decoding mode {decoding!r}; choose one of: {', '.join(DECODERS)}")
    return DECODERS[decoding]


def model_device_dtype(model):
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def decode_batch(model, processor, utts: Sequence[Utterance], task: Task,
                 audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                 decoding: str = "free") -> list[dict]:
    """Decoder results for one batch of utterances (all decoded together, left-padded)."""
    decoder = get_decoder(decoding)
    if max_new_tokens is None:
        max_new_tokens = max(default_max_new_tokens(processor, utt, task) for utt in utts)
    batch = build_generation_batch(processor, utts, task, audios=audios)
    device, dtype = model_device_dtype(model)
    batch = move_to(batch, device, dtype)
    return decoder(model, processor, batch, utts, task, max_new_tokens)


def generate_texts(model, processor, utts: Sequence[Utterance], task: Task,
                   audios: Sequence[np.ndarray] | None = None, max_new_tokens: int | None = None,
                   decoding: str = "free") -> list[str]:
    """Response texts only (see decode_batch)."""
    return [d["output"] for d in decode_batch(model, processor, utts, task, audios, max_new_tokens, decoding)]


def prediction_record(utt: Utterance, task: Task, decoded: dict | str) -> dict:
    """One line of a predictions file: id, output, parsed scores, problems (+ expected)."""
    if isinstance(decoded, str):
        decoded = {"output": decoded}
    parsed = parse_scores(decoded["output"], utt, task)
    record = {"id": utt.id, "output": decoded["output"], "scores": parsed.scores.to_dict(),
              "problems": parsed.problems}
    if "expected" in decoded:
        record["expected"] = decoded["expected"]
    return record


# --------------------------------------------------------------------------------------
# Prediction files
# --------------------------------------------------------------------------------------

def read_predictions(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Records of a predictions file. A last line cut off by a crash is ignored (and with
    ``repair``, removed from the file so that appending starts on a fresh line)."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    records = []
    for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ApaError(f"{path}:{lineno}: not valid JSON ({e.msg}); remove the line or choose another --out") \
                from None
        if not isinstance(record, dict) or "id" not in record:
            raise ApaError(f"{path}:{lineno}: not a prediction record (no 'id'); is --out the right file?")
        records.append(record)
    return records


def _rewrite_in_order(path: Path, records: list[dict], order: dict[str, int]) -> None:
    position = {id(r): i for i, r in enumerate(records)}
    records = sorted(records, key=lambda r: (order.get(r["id"], len(order)), position[id(r)]))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@dataclass
class PredictSummary:
    total: int      # utterances asked for
    new: int        # predicted in this run
    skipped: int    # already in the output file
    parsed: int     # outputs (of the asked-for utterances) that parse without problems

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.total if self.total else float("nan")


def _append_predictions(model, processor, todo: Sequence[Utterance], task: Task, path: Path, batch_size: int,
                        max_new_tokens: int | None, decoding: str, progress: bool, desc: str = "predict") -> None:
    """Decode ``todo`` in length-sorted batches, appending each batch to ``path`` (fsynced)."""
    from tqdm.auto import tqdm

    lengths = [estimated_length(processor, utt, task) for utt in todo]
    batches = length_sorted_batches(lengths, batch_size)
    with path.open("a", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress or not todo,
                 file=sys.stderr) as bar:
        for indices in batches:
            batch_utts = [todo[i] for i in indices]
            audios = [load_audio(utt.audio_path) for utt in batch_utts]
            decoded = decode_batch(model, processor, batch_utts, task, audios=audios,
                                   max_new_tokens=max_new_tokens, decoding=decoding)
            lines = "".join(json.dumps(prediction_record(utt, task, result), ensure_ascii=False) + "\n"
                            for utt, result in zip(batch_utts, decoded))
            try:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:  # a full disk: earlier batches are safe, a cut line is repaired on resume
                raise ApaError(f"cannot write predictions to {path}: {e.strerror}; free disk space and run the "
                               "same command again: finished batches are kept and skipped") from None
            bar.update(len(batch_utts))


def _count_parsed(records: Sequence[dict], order: dict[str, int]) -> int:
    return sum(1 for r in records if r["id"] in order and not r.get("problems"))


def predict_manifest(model, processor, utts: Sequence[Utterance], task: Task, out_path: str | os.PathLike,
                     batch_size: int = 8, max_new_tokens: int | None = None, decoding: str = "free",
                     progress: bool = True, shard: Shard | None = None) -> PredictSummary:
    """Predict every utterance not yet in ``out_path``; append per batch; resumable.

    With ``shard`` of world size N > 1 (one process of `torchrun` / `accelerate launch`, see
    ``Shard.from_environment``) this process predicts its share into its own shard file and
    rank 0 merges the shards into ``out_path``: see ``predict_sharded``. Shard files left
    beside ``out_path`` by an interrupted multi-process run are merged in first, so a
    single-process rerun resumes them too.
    """
    if batch_size < 1:
        raise ApaError(f"--batch-size must be at least 1, got {batch_size}")
    get_decoder(decoding)
    if shard is not None and shard.world_size > 1:
        return predict_sharded(model, processor, utts, task, out_path, shard, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, decoding=decoding, progress=progress)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if shard_files(out_path):
        merge_shards(out_path, utts)
    done = {r["id"] for r in read_predictions(out_path, repair=True)}
    todo = [utt for utt in utts if utt.id not in done]
    _append_predictions(model, processor, todo, task, out_path, batch_size, max_new_tokens, decoding, progress)

    records = read_predictions(out_path)
    order = {utt.id: i for i, utt in enumerate(utts)}
    _rewrite_in_order(out_path, records, order)
    return PredictSummary(total=len(utts), new=len(todo), skipped=len(utts) - len(todo),
                          parsed=_count_parsed(records, order))


# --------------------------------------------------------------------------------------
# Several processes (torchrun / accelerate launch): one shard per process, merged by rank 0
#
# `torchrun --nproc_per_node N -m apa.cli predict ... --out OUT.jsonl`: process r predicts
# utterances r, r+N, ... into OUT.rank{r}-of-{N}.jsonl (resumable like OUT.jsonl), then
# rank 0 merges every shard into OUT.jsonl in manifest order and removes the shards. Ids
# already in OUT.jsonl are skipped by every process. The shard files must be on a file
# system that rank 0 sees (one machine, or a shared folder).
# --------------------------------------------------------------------------------------

# How long a process waits for the others at the final synchronisation (the slowest shard).
SHARD_WAIT_HOURS = 12


@dataclass(frozen=True)
class Shard:
    """This process's share of a multi-process prediction: rank r of N takes the manifest's
    utterances r, r+N, r+2N, ... (interleaved, so that every process gets as many long and
    short clips, and the share of each process does not depend on what is already done)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Shard":
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and `accelerate launch` set them (1 process
        when unset)."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise ApaError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e}); launch with torchrun "
                           "or accelerate launch") from None
        if world_size < 1 or not 0 <= rank < world_size:
            raise ApaError(f"RANK={rank} does not fit WORLD_SIZE={world_size}")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    def take(self, items: Sequence) -> list:
        return list(items[self.rank::self.world_size])


def device_for_shard(requested: str | None, shard: Shard) -> str | None:
    """The device of one process: cuda:LOCAL_RANK when CUDA is there (also for a plain
    "cuda"), else CPU; an explicit index (cuda:1) or cpu is kept. One process: ``requested``."""
    if shard.world_size <= 1:
        return requested
    import torch

    if requested in (None, "cuda"):
        if not torch.cuda.is_available():
            return requested or "cpu"
        if shard.local_rank >= torch.cuda.device_count():
            raise ApaError(f"process LOCAL_RANK={shard.local_rank} but this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s); start at most one process per GPU "
                           "(--nproc_per_node / --num_processes) or pass --device cpu")
        return f"cuda:{shard.local_rank}"
    return requested


def init_distributed(shard: Shard, device) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA) when there are several processes and
    none is joined yet; True when this call created it."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if shard.world_size <= 1 or dist.is_initialized():
        return False
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            timeout=timedelta(hours=SHARD_WAIT_HOURS))
    return True


def shard_path(out_path: str | os.PathLike, rank: int, world_size: int) -> Path:
    """OUT.jsonl -> OUT.rank0-of-2.jsonl (beside it)."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.rank{rank}-of-{world_size}{out_path.suffix}")


def shard_files(out_path: str | os.PathLike) -> list[tuple[Path, int, int]]:
    """(path, rank, world size) of every shard file beside ``out_path``, of any world size."""
    import re

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
    records = read_predictions(out_path)
    seen = {r["id"] for r in records}
    for path, _, _ in shards:
        for record in read_predictions(path):
            if record["id"] not in seen:
                seen.add(record["id"])
                records.append(record)
    _rewrite_in_order(out_path, records, {utt.id: i for i, utt in enumerate(utts)})
    for path, _, _ in shards:
        path.unlink(missing_ok=True)
    return records


def predict_sharded(model, processor, utts: Sequence[Utterance], task: Task, out_path: str | os.PathLike,
                    shard: Shard, batch_size: int = 8, max_new_tokens: int | None = None,
                    decoding: str = "free", progress: bool = True) -> PredictSummary:
    """One process's part of a multi-process prediction.

    Process r of N predicts its share (``Shard.take``) minus the ids already in ``out_path``
    (or in shard files of an earlier run with another N) into OUT.rank{r}-of-{N}.jsonl,
    appended per batch and resumable exactly like ``out_path`` itself. When every process is
    done (they wait for each other), rank 0 merges the shards into ``out_path`` in manifest
    order (``merge_shards``), and every process returns once the merged file is written.
    Joins the process group first when needed (``init_distributed``, on the model's device).

    Rank 0 returns the summary of the whole manifest; the other ranks that of their share.
    """
    import torch.distributed as dist

    created = init_distributed(shard, model_device_dtype(model)[0])
    try:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        own = shard_path(out_path, shard.rank, shard.world_size)
        # --out is only written by the merge at the end, so every process reads the same ids.
        done = {r["id"] for r in read_predictions(out_path)}
        done |= {r["id"] for r in read_predictions(own, repair=True)}
        for path, _, world_size in shard_files(out_path):
            if world_size != shard.world_size:  # left by an earlier run with another process count
                done |= {r["id"] for r in read_predictions(path)}
        mine = shard.take(utts)
        todo = [utt for utt in mine if utt.id not in done]
        _append_predictions(model, processor, todo, task, own, batch_size, max_new_tokens, decoding,
                            progress=progress and shard.rank == 0,
                            desc=f"predict (rank 0 of {shard.world_size})")

        # Wait for every shard (the gather is the barrier), then rank 0 merges.
        new_counts: list = [None] * shard.world_size
        dist.all_gather_object(new_counts, len(todo))
        if shard.rank == 0:
            records = merge_shards(out_path, utts)
            order = {utt.id: i for i, utt in enumerate(utts)}
            new = sum(new_counts)
            summary = PredictSummary(total=len(utts), new=new, skipped=len(utts) - new,
                                     parsed=_count_parsed(records, order))
        else:
            order = {utt.id: i for i, utt in enumerate(mine)}
            summary = PredictSummary(total=len(mine), new=len(todo), skipped=len(mine) - len(todo),
                                     parsed=_count_parsed(read_predictions(own), order))
        dist.barrier()  # the merged file is complete when any process returns
    finally:
        if created:
            dist.destroy_process_group()
    return summary
