"""Which utterances go into which micro-batch, epoch by epoch, on which process.

The order is a pure function of (seed, epoch, world size), so a resumed run rebuilds the
same epoch and skips the batches it already did: the sampler's whole state is
(epoch, position).
"""

from __future__ import annotations


import math
import os
from dataclasses import dataclass

import numpy as np

from apa.data.manifest import Utterance, read_manifest
from apa.errors import ApaError
from apa.targets import has_scores
from apa.tasks import Task

# Length-grouped batching sorts within windows of this many batches: enough to make batches
# of similar length, few enough that the order stays random across the epoch.
GROUP_WINDOW_BATCHES = 64


@dataclass
class Source:
    utterances: list[Utterance]
    weight: float


def load_sources(train: list[dict], task: Task, limit: int = 0, log=print, evidence: str | None = None,
                 wrong_text: float = 0.0, wrong_text_manifest: str | os.PathLike | None = None,
                 seed: int = 0) -> list[Source]:
    """Read the training manifests ({path, weight} each) and keep the utterances that carry
    every score ``task`` needs; ``limit`` keeps the first N of each manifest. With
    ``evidence`` each utterance gets its acoustic evidence (apa.evidence, computed beside the
    manifest when missing), which its prompt then carries. With ``wrong_text`` that share of
    the clips is also read against another text (apa.data.wrong_text), written to
    ``wrong_text_manifest`` (its evidence beside it) and added as a source of weight 1."""
    from apa.evidence.extract import default_jobs, with_evidence

    sources = []
    for item in train:
        utterances = read_manifest(item["path"])
        if limit:
            utterances = utterances[:limit]
        if evidence:
            utterances = with_evidence(utterances, item["path"], jobs=default_jobs())
        usable = [utt for utt in utterances if has_scores(utt, task)]
        if not usable:
            raise ApaError(f"{item['path']}: no utterance has all the scores task {task.name} needs "
                           f"({', '.join(f'{l} {a}' for l, a in task.fields)}); choose another task for this corpus")
        if len(usable) < len(utterances):
            log(f"{item['path']}: {len(utterances) - len(usable)} utterances lack scores for "
                f"{task.name} and are left out")
        sources.append(Source(utterances=usable, weight=float(item.get("weight", 1.0))))
    if wrong_text:
        sources.append(_wrong_text_source(sources, wrong_text, wrong_text_manifest, seed, evidence, log))
    return sources


def _wrong_text_source(sources: list[Source], share: float, manifest: str | os.PathLike | None, seed: int,
                       evidence: str | None, log) -> Source:
    from apa.data.manifest import write_manifest
    from apa.data.wrong_text import wrong_text_pairs
    from apa.evidence.extract import default_jobs, with_evidence

    if manifest is None:
        raise ApaError("wrong_text needs a file to write its pairs to (the run's output_dir)")
    pairs = wrong_text_pairs([u for s in sources for u in s.utterances], share, seed)
    # Rewritten identically on a resumed run (the pairs are a function of the data and seed),
    # so the evidence beside it stays valid and is not recomputed.
    write_manifest(manifest, pairs)
    if evidence:
        pairs = with_evidence(pairs, manifest, jobs=default_jobs())
    log(f"{manifest}: {len(pairs)} clips read against another text, labelled as words not said")
    return Source(utterances=pairs, weight=1.0)


def utterance_length(utt: Utterance) -> float:
    """Cost proxy for grouping: audio seconds (when known) plus response size."""
    phones = sum(len(w.phones) for w in utt.words)
    return (utt.duration or 0.0) + 0.05 * (len(utt.words) + phones)


def epoch_examples(sources: list[Source], seed: int, epoch: int) -> list[Utterance]:
    """The weighted mixture for one epoch: weight w gives floor(w) full copies of a corpus plus
    a fresh random fraction (w - floor(w)) of it."""
    rng = np.random.default_rng([seed, epoch, 1])
    examples: list[Utterance] = []
    for source in sources:
        whole, fraction = divmod(source.weight, 1.0)
        for _ in range(int(whole)):
            examples.extend(source.utterances)
        n_extra = int(round(fraction * len(source.utterances)))
        if n_extra:
            picks = rng.choice(len(source.utterances), size=n_extra, replace=False)
            examples.extend(source.utterances[i] for i in sorted(picks))
    return examples


def epoch_batches(examples: list[Utterance], batch_size: int, seed: int, epoch: int,
                  group_by_length: bool, grad_accum: int = 1, rank: int = 0,
                  world_size: int = 1) -> list[list[Utterance]]:
    """This process's micro-batches for one epoch; every process gets the same number.

    Optimizer step s covers global batches [s*A*W, (s+1)*A*W) (A = grad_accum, W = world
    size) and process r takes A consecutive ones of them, so a step sees the same examples
    whatever the number of processes: a 2-process run reproduces a 1-process run with A*2.
    """
    rng = np.random.default_rng([seed, epoch, 2])
    order = rng.permutation(len(examples))
    if group_by_length and batch_size > 1:
        window = batch_size * GROUP_WINDOW_BATCHES
        chunks = [order[i:i + window] for i in range(0, len(order), window)]
        order = np.concatenate([sorted(c, key=lambda i: -utterance_length(examples[i])) for c in chunks])
    batches = [[examples[i] for i in order[j:j + batch_size]] for j in range(0, len(order), batch_size)]
    if group_by_length and batch_size > 1:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if world_size == 1:
        return batches
    # Equal counts per process keep gradient all-reduces in step; the few left over are dropped.
    window = grad_accum * world_size
    mine = []
    for start in range(0, len(batches) - window + 1, window):
        mine.extend(batches[start + rank * grad_accum:start + (rank + 1) * grad_accum])
    tail = batches[len(batches) - len(batches) % window:]
    per_process = len(tail) // world_size
    mine.extend(tail[rank * per_process:(rank + 1) * per_process])
    return mine


def steps_per_epoch(n_batches: int, grad_accum: int) -> int:
    return math.ceil(n_batches / grad_accum)
