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
DECODERS: dict[str, Decoder] = {"free": free_decode}


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


def predict_manifest(model, processor, utts: Sequence[Utterance], task: Task, out_path: str | os.PathLike,
                     batch_size: int = 8, max_new_tokens: int | None = None, decoding: str = "free",
                     progress: bool = True) -> PredictSummary:
    """Predict every utterance not yet in ``out_path``; append per batch; resumable."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ApaError(f"--batch-size must be at least 1, got {batch_size}")
    get_decoder(decoding)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["id"] for r in read_predictions(out_path, repair=True)}
    todo = [utt for utt in utts if utt.id not in done]
    lengths = [estimated_length(processor, utt, task) for utt in todo]
    batches = length_sorted_batches(lengths, batch_size)

    with out_path.open("a", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc="predict", unit="utt", disable=not progress or not todo,
                 file=sys.stderr) as bar:
        for indices in batches:
            batch_utts = [todo[i] for i in indices]
            audios = [load_audio(utt.audio_path) for utt in batch_utts]
            decoded = decode_batch(model, processor, batch_utts, task, audios=audios,
                                   max_new_tokens=max_new_tokens, decoding=decoding)
            for utt, result in zip(batch_utts, decoded):
                f.write(json.dumps(prediction_record(utt, task, result), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch_utts))

    records = read_predictions(out_path)
    order = {utt.id: i for i, utt in enumerate(utts)}
    _rewrite_in_order(out_path, records, order)
    wanted = [r for r in records if r["id"] in order]
    parsed = sum(1 for r in wanted if not r.get("problems"))
    return PredictSummary(total=len(utts), new=len(todo), skipped=len(utts) - len(todo), parsed=parsed)
