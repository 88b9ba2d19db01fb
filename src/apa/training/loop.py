"""The training loop: SFT, SimPO + CE and DPO with LoRA, in one readable pass.

Top to bottom: processes and devices; data; model, LoRA and optimizer; resume; the steps
(one optimizer step = grad_accum micro-batches on every process); the saved result. What
differs between the methods lives in apa.training.objectives; this loop has no branch on
the method.

Data parallelism needs no DDP wrapper: every process computes gradients on its own
micro-batches, each micro-batch's loss being divided by the step's GLOBAL totals (tokens,
pairs), and the LoRA gradients (a few MB) are summed across processes before the optimizer
step. Every token weighs the same whatever the batch size, accumulation or process count,
and the loss can call the model's parts directly (see apa.forward).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from apa.backbones.release import save_weights
from apa.config import save_config
from apa.distributed import Processes, seed_everything
from apa.errors import ApaError
from apa.evidence.store import check_kind
from apa.prompts import EVIDENCE_PROMPT_VERSION, PROMPT_VERSION
from apa.training.checkpoint import (TrainState, latest_checkpoint, load_checkpoint, save_checkpoint,
                                     weights_folder)
from apa.training.config import TrainConfig
from apa.training.run_log import MetricsLog


class BatchBuilder:
    """Utterances -> model inputs, in DataLoader workers (the objective knows how)."""

    def __init__(self, objective, epoch: int):
        self.objective = objective
        self.epoch = epoch

    def __call__(self, utterances):
        return self.objective.build_batch(utterances, self.epoch)


def batch_loader(batches, builder: BatchBuilder, num_workers: int):
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, collate_fn=builder,
                                       num_workers=num_workers, prefetch_factor=2 if num_workers else None,
                                       persistent_workers=False)


def lr_lambda(total_steps: int, warmup_ratio: float, kind: str):
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine to 0 or constant."""
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def sum_over_processes(procs: Processes, values: dict[str, float], device) -> dict[str, float]:
    """Add named numbers across processes (one all-reduce, keys in a fixed order)."""
    keys = sorted(values)
    summed = procs.sum(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device))
    return dict(zip(keys, summed.tolist()))


def add_into(total: dict[str, float], values: dict[str, float]) -> dict[str, float]:
    for key, value in values.items():
        total[key] = total.get(key, 0.0) + value
    return total


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    from tqdm import tqdm

    from apa.backbones.loading import load_model_and_processor
    from apa.backbones.lora import add_lora
    from apa.data.lexicon import corpus_lexicon, write_lexicon
    from apa.targets import value_modes
    from apa.tasks import get_task
    from apa.training.data import epoch_batches, epoch_examples, load_sources, steps_per_epoch
    from apa.training.objectives import make_objective

    # ---- processes, output folder, seeds ----
    procs = Processes.from_environment()
    device = procs.device(None)
    procs.join(device)
    out = Path(config.output_dir)
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and latest_checkpoint(out) is not None:
            raise ApaError(f"{out} already holds checkpoints; pass --resume to continue that run, "
                           "or choose another output_dir")
        save_config(config, out / "config.yaml")
        print("resolved config:\n" + (out / "config.yaml").read_text(), file=sys.stderr)
    seed_everything(config.seed)

    # ---- data, model, objective ----
    evidence = check_kind(config.evidence)
    sources = load_sources(config.train, get_task(config.task), config.limit,
                           log=lambda message: print(message, file=sys.stderr), evidence=evidence,
                           wrong_text=config.wrong_text, wrong_text_manifest=out / "wrong_text.jsonl",
                           seed=config.seed)
    model, processor = load_model_and_processor(config.model, dtype=config.dtype, device=device)
    objective = make_objective(config, [u for s in sources for u in s.utterances], processor)

    # ---- LoRA, optimizer, schedule ----
    if not config.full_finetune:  # full_finetune: every weight that requires grad is trained
        model = add_lora(model, processor, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                         target_modules=config.lora_targets or None, train_audio=config.train_audio)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)

    def batches_of(epoch: int) -> list:
        return epoch_batches(epoch_examples(sources, config.seed, epoch), config.batch_size, config.seed, epoch,
                             config.group_by_length, config.grad_accum, procs.rank, procs.world_size)

    n_batches = len(batches_of(0))
    if n_batches == 0:
        raise ApaError("not enough training utterances for one micro-batch per process")
    total_steps = config.max_steps or int(math.ceil(config.epochs * steps_per_epoch(n_batches, config.grad_accum)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, config.warmup_ratio,
                                                                       config.scheduler))

    # ---- resume ----
    state = TrainState()
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            raise ApaError(f"--resume: no checkpoint under {out / 'checkpoints'}; start without --resume")
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, config.full_finetune, device)
        if procs.is_main:
            print(f"resumed from {checkpoint} (step {state.step}, epoch {state.epoch})", file=sys.stderr)

    def save() -> None:
        if procs.is_main:
            save_checkpoint(out, model, processor, optimizer, scheduler, state, config.keep_checkpoints,
                            weights_folder(config.full_finetune))
        procs.barrier()

    # ---- the steps ----
    log = MetricsLog(out, enabled=procs.is_main)
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and procs.is_main),
               desc=f"{config.method} {config.task}", unit="step", dynamic_ncols=True)
    last_saved = state.step if resume else -1
    started = time.perf_counter()
    samples_done = 0
    while state.step < total_steps:
        batches = batches_of(state.epoch)[state.position:]
        loader = iter(batch_loader(batches, BatchBuilder(objective, state.epoch), config.num_workers))
        remaining = len(batches)
        while remaining and state.step < total_steps:
            window = [next(loader) for _ in range(min(config.grad_accum, remaining))]
            remaining -= len(window)
            # What the step's loss is divided by, over every micro-batch of every process.
            counts = sum_over_processes(procs, _sum_counts(objective, window), device)
            totals = {k: torch.tensor(max(v, 1.0), device=device) for k, v in counts.items()}
            sums: dict[str, float] = {}
            for batch in window:
                loss, batch_sums = objective.loss(model, batch, totals)
                loss.backward()
                add_into(sums, batch_sums)
            for p in trainable:  # the global gradient: each process holds its share of the sum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                procs.sum(p.grad)
            fields = objective.log_fields(sum_over_processes(procs, sums, device),
                                          {k: max(v, 1.0) for k, v in counts.items()})
            if not math.isfinite(fields["loss"]):
                good = latest_checkpoint(out)
                raise ApaError(f"loss became {fields['loss']} at step {state.step + 1} (epoch {state.epoch}); "
                               f"stopped without saving. Last good checkpoint: {good or 'none yet'}. "
                               "Lower lr, check the data, then rerun (with --resume to continue from it)")
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.position += len(window)
            samples_done += sum(objective.samples(b) for b in window) * procs.world_size

            record = {"step": state.step, "epoch": state.epoch + state.position / n_batches,
                      "loss": fields.pop("loss"), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                      "samples_per_s": samples_done / (time.perf_counter() - started), **fields}
            if state.step % config.log_every == 0 or state.step == total_steps:
                log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.2f}")
            bar.update(1)
            if config.save_every and state.step % config.save_every == 0 and state.step < total_steps:
                save()
                last_saved = state.step
        if not remaining:
            state.epoch += 1
            state.position = 0
    bar.close()

    # ---- the result ----
    if last_saved != state.step:
        save()
    weights = out / weights_folder(config.full_finetune)
    if procs.is_main:
        # in the release layout: a complete model folder (`apa predict --model OUT/model`) or
        # an adapter that PEFT and vLLM load onto the released checkpoint
        save_weights(model, processor, weights)
        # the pronunciations the model was trained with travel with it (apa score / serve read them)
        write_lexicon(corpus_lexicon(u for s in sources for u in s.utterances), weights)
        # the training set's most frequent value per field: the parallel decoder's first guesses
        guesses = value_modes((u for s in sources for u in s.utterances), get_task(config.task))
        (weights / "apa_run.json").write_text(json.dumps(
            {"task": config.task, "method": config.method, "base_model": config.model, "steps": state.step,
             "evidence": evidence, "prompt_version": EVIDENCE_PROMPT_VERSION if evidence else PROMPT_VERSION,
             "full_finetune": config.full_finetune,
             "first_guesses": {f"{level} {aspect}": value for (level, aspect), value in guesses.items()}}, indent=2))
        print(f"{weights.name} saved to {weights}", file=sys.stderr)
    procs.barrier()
    return weights


def _sum_counts(objective, window: list[dict]) -> dict[str, float]:
    total: dict[str, float] = {}
    for batch in window:
        add_into(total, objective.counts(batch))
    return total
