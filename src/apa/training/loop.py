"""The training loop: SFT, SimPO + CE and DPO with LoRA, in one readable pass.

Sections, top to bottom: processes and devices; data; model, LoRA and optimizer; resume;
the step (one optimizer step = grad_accum micro-batches on every process); checkpoints.

Data parallelism needs no DDP wrapper: every process computes gradients on its own
micro-batches, the loss being normalised by the GLOBAL number of tokens (or pairs) in the
step, and the LoRA gradients (a few MB) are summed across processes before the optimizer
step. That makes every token weigh the same whatever the batch size, accumulation or
process count, and lets the loss call the model's parts directly (see apa.forward).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from apa.errors import ApaError
from apa.training.config import TrainConfig, save_config


# ---------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------
@dataclass
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Processes":
        """torchrun and `accelerate launch` both set RANK / WORLD_SIZE / LOCAL_RANK."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
        return cls(rank=rank, world_size=world_size, device=device)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def load_sources(config: TrainConfig):
    """Read the manifests and keep the utterances that carry every score the task needs."""
    from apa.data.manifest import read_manifest
    from apa.targets import MissingScore, format_scores
    from apa.tasks import get_task
    from apa.training.data import Source

    task = get_task(config.task)
    sources = []
    for item in config.train:
        utterances = read_manifest(item["path"])
        if config.limit:
            utterances = utterances[:config.limit]
        usable = []
        for utt in utterances:
            try:
                format_scores(utt, task)
                usable.append(utt)
            except MissingScore:
                continue
        if not usable:
            raise ApaError(f"{item['path']}: no utterance has all the scores task {task.name} needs "
                           f"({', '.join(f'{l} {a}' for l, a in task.fields)}); choose another task for this corpus")
        if len(usable) < len(utterances):
            print(f"{item['path']}: {len(utterances) - len(usable)} utterances lack scores for "
                  f"{task.name} and are left out", file=sys.stderr)
        sources.append(Source(utterances=usable, weight=float(item.get("weight", 1.0))))
    return sources


class BatchBuilder:
    """Turns a list of utterances into model inputs (runs in DataLoader workers).

    SFT: one row per utterance. SimPO/DPO: rows [chosen..., rejected...] over one set of
    clips, so each clip is loaded and featurised once and encoded once (clip_of_row).
    """

    def __init__(self, processor, config: TrainConfig, slopes, epoch: int):
        self.processor = processor
        self.config = config
        self.slopes = slopes
        self.epoch = epoch

    def __call__(self, utterances):
        from apa.collate import build_training_batch
        from apa.tasks import get_task

        task = get_task(self.config.task)
        if self.config.method == "sft":
            return build_training_batch(self.processor, utterances, task)
        from apa.training.pairs import make_pairs

        # One pair per utterance per epoch; a pair is a pure function of (seed, epoch, id).
        pair_epoch = self.epoch if self.config.fresh_pairs_each_epoch else 0
        pairs = make_pairs(utterances, task, self.slopes, seed=self.config.seed, epoch=pair_epoch)
        batch = build_training_batch(self.processor, utterances, task,
                                     targets=[p.chosen_text for p in pairs],
                                     rejected_targets=[p.rejected_text for p in pairs])
        return batch


def batch_loader(batches, builder: BatchBuilder, num_workers: int):
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, collate_fn=builder,
                                       num_workers=num_workers, prefetch_factor=2 if num_workers else None,
                                       persistent_workers=False)


# ---------------------------------------------------------------------------------------
# Losses of one micro-batch
# ---------------------------------------------------------------------------------------
def count_units(batch, method: str) -> torch.Tensor:
    """What the step's loss is normalised by: [response tokens, pairs, chosen tokens]."""
    labelled = (batch["labels"][:, 1:] != -100).sum(dim=1)
    if method == "sft":
        return torch.tensor([float(labelled.sum()), 0.0, 0.0])
    n_pairs = batch["labels"].shape[0] // 2
    return torch.tensor([float(labelled.sum()), float(n_pairs), float(labelled[:n_pairs].sum())])


def micro_batch_loss(model, batch, config: TrainConfig, totals: torch.Tensor):
    """This micro-batch's share of the step loss, and its statistics for the log."""
    from apa.forward import response_logps
    from apa.training import losses

    from apa.collate import move_to

    batch = dict(batch)
    clip_of_row = batch.pop("clip_of_row", None)
    batch = move_to(batch, model.device, dtype=next(model.parameters()).dtype)
    logps = response_logps(model, batch, clip_of_row)
    if config.method == "sft":
        loss = losses.sft_loss(logps.sum_logp, logps.n_tokens, num_items_in_batch=totals[0])
        return loss, {"nll_sum": float(-logps.sum_logp.detach().sum())}

    n = batch["labels"].shape[0] // 2
    chosen, rejected = slice(0, n), slice(n, 2 * n)
    stats = {}
    if config.method == "simpo":
        pair_losses, margins = losses.simpo_loss(logps.mean_logp[chosen], logps.mean_logp[rejected],
                                                 beta=config.beta, gamma=config.gamma, form=config.simpo_form)
        # lambda x CE(y+), every chosen token of the step weighing the same (as in SFT)
        ce = losses.sft_loss(logps.sum_logp[chosen], logps.n_tokens[chosen], num_items_in_batch=totals[2])
        loss = pair_losses.sum() / totals[1] + config.ce_weight * ce
        stats["ce_sum"] = float(-logps.sum_logp[chosen].detach().sum())
    else:
        with torch.no_grad(), model.disable_adapter():
            reference = response_logps(model, batch, clip_of_row)
        pair_losses, margins = losses.dpo_loss(logps.sum_logp[chosen], logps.sum_logp[rejected],
                                               reference.sum_logp[chosen], reference.sum_logp[rejected],
                                               beta=config.beta)
        loss = pair_losses.sum() / totals[1]
    stats.update(pref_sum=float(pair_losses.detach().sum()), margin_sum=float(margins.sum()),
                 correct=float((margins > 0).sum()))
    return loss, stats


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------
@dataclass
class TrainState:
    step: int = 0      # optimizer steps done
    epoch: int = 0     # current epoch
    position: int = 0  # this process's micro-batches done within the epoch


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_folder(config: TrainConfig) -> str:
    """What a run trains and saves: "adapter" (LoRA) or "model" (full_finetune: every weight)."""
    return "model" if config.full_finetune else "adapter"


def save_checkpoint(out: Path, model, optimizer, scheduler, state: TrainState, keep: int,
                    weights: str = "adapter") -> Path:
    """Write to a temporary folder, then rename: a crash mid-save never corrupts the last good one.

    ``weights`` names the sub-folder of the saved weights: "adapter" or "model" (full_finetune)."""
    root = out / "checkpoints"
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-step-{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / weights)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state": asdict(state), "rng": _rng_state()}, tmp / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ApaError(f"cannot save checkpoint to {final}: {e.strerror}; free disk space and rerun "
                       "with --resume (the previous checkpoint is intact)") from e
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*"))
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------
class MetricsLog:
    """metrics.jsonl always; TensorBoard too when it is installed."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
            self.tensorboard.flush()


def lr_lambda(total_steps: int, warmup_ratio: float, kind: str):
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    from tqdm import tqdm

    from apa.modeling import add_lora, load_model_and_processor
    from apa.training.data import epoch_batches, epoch_examples, steps_per_epoch

    procs = Processes.from_environment()
    out = Path(config.output_dir)
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and latest_checkpoint(out) is not None:
            raise ApaError(f"{out} already holds checkpoints; pass --resume to continue that run, "
                           "or choose another output_dir")
        save_config(config, out / "config.yaml")
        print("resolved config:\n" + (out / "config.yaml").read_text(), file=sys.stderr)
    seed_everything(config.seed)

    sources = load_sources(config)
    slopes = None
    if config.method != "sft":
        from apa.training.pairs import fit_slopes

        slopes = fit_slopes([u for s in sources for u in s.utterances])

    model, processor = load_model_and_processor(config.model, dtype=config.dtype, device=procs.device)
    if not config.full_finetune:  # full_finetune: every weight that requires grad is trained
        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                         target_modules=tuple(config.lora_targets), train_audio=config.train_audio)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)

    n_batches = len(epoch_batches(epoch_examples(sources, config.seed, 0), config.batch_size, config.seed, 0,
                                  config.group_by_length, config.grad_accum, procs.rank, procs.world_size))
    if n_batches == 0:
        raise ApaError("not enough training utterances for one micro-batch per process")
    per_epoch = steps_per_epoch(n_batches, config.grad_accum)
    total_steps = config.max_steps or int(math.ceil(config.epochs * per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, config.warmup_ratio,
                                                                       config.scheduler))
    state = TrainState()
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            raise ApaError(f"--resume: no checkpoint under {out / 'checkpoints'}; start without --resume")
        if config.full_finetune:
            _load_full_weights(model, checkpoint / "model", procs.device)
        else:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"),
                                                       device=str(procs.device)))
        saved = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(**saved["state"])
        _set_rng_state(saved["rng"])
        if procs.is_main:
            print(f"resumed from {checkpoint} (step {state.step}, epoch {state.epoch})", file=sys.stderr)

    log = MetricsLog(out, enabled=procs.is_main)
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and procs.is_main),
               desc=f"{config.method} {config.task}", unit="step", dynamic_ncols=True)
    last_saved = state.step if resume else -1
    started = time.perf_counter()
    samples_done = 0
    while state.step < total_steps:
        examples = epoch_examples(sources, config.seed, state.epoch)
        batches = epoch_batches(examples, config.batch_size, config.seed, state.epoch, config.group_by_length,
                                config.grad_accum, procs.rank, procs.world_size)[state.position:]
        loader = iter(batch_loader(batches, BatchBuilder(processor, config, slopes, state.epoch),
                                   config.num_workers))
        remaining = len(batches)
        while remaining and state.step < total_steps:
            # ---- one optimizer step: grad_accum micro-batches on every process ----
            window = [next(loader) for _ in range(min(config.grad_accum, remaining))]
            remaining -= len(window)
            totals = procs.sum(sum(count_units(b, config.method) for b in window).to(procs.device)).clamp(min=1)
            stats: dict[str, float] = {}
            for batch in window:
                loss, batch_stats = micro_batch_loss(model, batch, config, totals)
                loss.backward()
                for key, value in batch_stats.items():
                    stats[key] = stats.get(key, 0.0) + value
            for p in trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                procs.sum(p.grad)
            keys = sorted(stats)
            global_stats = procs.sum(torch.tensor([stats[k] for k in keys], dtype=torch.float64,
                                                  device=procs.device))
            stats = dict(zip(keys, global_stats.tolist()))
            step_loss = _step_loss(stats, totals, config)
            if not math.isfinite(step_loss):
                good = latest_checkpoint(out)
                raise ApaError(f"loss became {step_loss} at step {state.step + 1} (epoch {state.epoch}); "
                               f"stopped without saving. Last good checkpoint: {good or 'none yet'}. "
                               "Lower lr, check the data, then rerun (with --resume to continue from it)")
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.position += len(window)
            samples_done += sum(_n_samples(b, config.method) for b in window) * procs.world_size
            elapsed = time.perf_counter() - started

            record = {"step": state.step, "epoch": state.epoch + state.position / n_batches,
                      "loss": step_loss, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                      "samples_per_s": samples_done / elapsed}
            record.update(_step_details(stats, totals, config))
            if state.step % config.log_every == 0 or state.step == total_steps:
                log.write(record)
            bar.set_postfix(loss=f"{step_loss:.4f}", sps=f"{record['samples_per_s']:.2f}")
            bar.update(1)
            if config.save_every and state.step % config.save_every == 0 and state.step < total_steps:
                _save(out, model, optimizer, scheduler, state, config, procs)
                last_saved = state.step
        if not remaining:
            state.epoch += 1
            state.position = 0
    bar.close()
    if last_saved != state.step:
        _save(out, model, optimizer, scheduler, state, config, procs)
    weights = weights_folder(config)
    if procs.is_main:
        model.save_pretrained(out / weights)
        if config.full_finetune:  # a complete model folder: `apa predict --model OUT/model`
            processor.save_pretrained(out / weights)
        (out / weights / "apa_run.json").write_text(json.dumps(
            {"task": config.task, "method": config.method, "base_model": config.model, "steps": state.step,
             "full_finetune": config.full_finetune}, indent=2))
        print(f"{'model' if config.full_finetune else 'adapter'} saved to {out / weights}", file=sys.stderr)
    procs.barrier()
    return out / weights


def _load_full_weights(model, folder: Path, device) -> None:
    """Every weight of a full_finetune checkpoint back into ``model``. Read with
    from_pretrained, which maps the saved names back onto the module's (they differ)."""
    loaded = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())
    model.to(device)


def _save(out, model, optimizer, scheduler, state, config, procs) -> None:
    if procs.is_main:
        save_checkpoint(out, model, optimizer, scheduler, state, config.keep_checkpoints, weights_folder(config))
    procs.barrier()


def _n_samples(batch, method: str) -> int:
    rows = batch["labels"].shape[0]
    return rows if method == "sft" else rows // 2


def _step_loss(stats: dict, totals: torch.Tensor, config: TrainConfig) -> float:
    if config.method == "sft":
        return stats["nll_sum"] / float(totals[0])
    loss = stats["pref_sum"] / float(totals[1])
    if config.method == "simpo":
        loss += config.ce_weight * stats["ce_sum"] / float(totals[2])
    return loss


def _step_details(stats: dict, totals: torch.Tensor, config: TrainConfig) -> dict:
    if config.method == "sft":
        return {"tokens": int(totals[0])}
    details = {"pairs": int(totals[1]), "margin": stats["margin_sum"] / float(totals[1]),
               "pair_accuracy": stats["correct"] / float(totals[1])}
    if config.method == "simpo":
        details["ce"] = stats["ce_sum"] / float(totals[2])
    return details
