"""Training throughput: the stock transformers + PEFT step against apa's, in one run.

A step is forward + backward + gradient clipping (norm 1.0) + AdamW on the LoRA parameters
(rank 8, alpha 16, on the text model's q/k/v/o/gate/up/down; the audio encoder and the
projector frozen), SFT on one `multi` sample repeated to the batch size (equal lengths):

- ``naive``: ``model(**batch, labels=labels).loss.backward()``, the plain transformers +
  PEFT loop the paper ran (LLaMA-Factory, batch 1): the stock forward projects EVERY
  position through the LM head (156k words for the 7B) and takes a cross-entropy over them.
- ``ours``: apa's training step (apa.training.objectives.Sft.loss ->
  apa.forward.response_logps): the LM head only on the response positions, each clip
  encoded once, the loss normalised by the step's response tokens.

Prints a markdown table: path, batch, gradient checkpointing, ms/sample, samples/s, peak
memory, and the memory above the model (peak minus what was in use when the case began).
Warm-up steps are not timed. A batch size that runs out of memory shows "OOM".

    python bench/train_throughput.py --shape tiny --steps 3                 # CPU check
    python bench/train_throughput.py --shape real --steps 10 --batch-sizes 1,4,8,16 \\
        --naive-batch-sizes 1,4,8 --gradient-checkpointing both             # one H100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import run_cases  # noqa: E402
import inputs  # noqa: E402
import measure  # noqa: E402
import models  # noqa: E402

LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.0  # apa's TrainConfig defaults (paper: rank 8)
MAX_GRAD_NORM = 1.0
LEARNING_RATE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    models.add_common_arguments(parser)
    parser.add_argument("--batch-sizes", type=models.int_list, default=[1, 4, 8, 16],
                        help="batch sizes of apa's step (default 1,4,8,16)")
    parser.add_argument("--naive-batch-sizes", type=models.int_list, default=[1],
                        help="batch sizes of the stock step (default 1, as the paper ran it)")
    parser.add_argument("--gradient-checkpointing", choices=("off", "on", "both"), default="off",
                        help="gradient checkpointing in the text model: off, on, or both (every case twice)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default %(default)s)")
    args = parser.parse_args(argv)
    models.check_common_arguments(parser, args)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    return args


def cases(args) -> list[str]:
    """Case names "path:batch:checkpointing", naive first."""
    flags = {"off": [0], "on": [1], "both": [0, 1]}[args.gradient_checkpointing]
    return [f"{path}:{batch}:{flag}" for flag in flags
            for path, sizes in (("naive", args.naive_batch_sizes), ("ours", args.batch_sizes))
            for batch in sizes]


class Bench:
    """The LoRA model and one sample, shared by every case of this process."""

    def __init__(self, args):

        from apa.backbones.lora import add_lora
        from apa.tasks import get_task

        self.args = args
        self.device, self.dtype, model, self.processor = models.setup(args)
        self.model = add_lora(model, self.processor, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT)
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        task = get_task("multi")
        utt = inputs.bench_utterance(self.processor, task, args.target_tokens)
        clip = inputs.speech_like_clip(args.audio_seconds, args.seed)
        self.sample = inputs.sample_row(self.processor, task, clip, utt, args.prompt_tokens, args.target_tokens)
        self.checkpointing = False

    def describe(self) -> str:
        sample = self.sample
        n_audio = inputs.count_audio_tokens(sample, self.processor)
        n_response = int((sample["labels"][0] != -100).sum())
        n_total = sample["input_ids"].shape[1]
        lora = sum(p.numel() for p in self.trainable)
        return (models.describe_setup(self.args, self.device, self.dtype, self.model) + "\n"
                f"sample: {n_total} tokens = {n_audio} audio ({self.args.audio_seconds:g} s) + "
                f"{n_total - n_audio - n_response} prompt text + {n_response} response; "
                f"LoRA r={LORA_R} on the text model: {lora / 1e6:.2f}M trainable parameters")

    def set_checkpointing(self, on: bool) -> None:
        if on == self.checkpointing:
            return
        if on:  # as apa.training.loop does it
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        else:
            self.model.gradient_checkpointing_disable()
            self.model.disable_input_require_grads()
        self.checkpointing = on

    def run(self, case: str) -> dict:
        path, batch_size, flag = case.split(":")
        batch_size, checkpointing = int(batch_size), flag == "1"
        result = measure.measure(self.device, lambda: self._time(path, batch_size, checkpointing))
        for p in self.trainable:  # whatever happened, leave no gradients behind
            p.grad = None
        measure.free_memory(self.device)
        return dict(result, path=path, batch=batch_size, checkpointing=checkpointing)

    def _time(self, path: str, batch_size: int, checkpointing: bool) -> dict:
        import torch

        from apa.collate import move_to
        from apa.tasks import get_task
        from apa.training.objectives import Sft

        self.set_checkpointing(checkpointing)
        text = {k: self.sample[k] for k in ("input_ids", "attention_mask", "labels")}
        batch = inputs.repeat_rows({**text, **self.sample["audio"]}, batch_size)
        optimizer = torch.optim.AdamW(self.trainable, lr=LEARNING_RATE)
        if path == "naive":
            moved = move_to(batch, self.device, dtype=self.dtype)

            def loss_of_step():
                return self.model(**moved).loss  # labels in the inputs: the stock full-vocabulary loss
        else:
            objective = Sft(get_task("multi"), self.processor)  # as apa.training.loop runs it
            totals = {k: torch.tensor(max(v, 1.0), device=self.device) for k, v in objective.counts(batch).items()}

            def loss_of_step():
                return objective.loss(self.model, batch, totals)[0]

        def step():
            loss = loss_of_step()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(self.args.warmup):
            step()
        seconds = measure.timed(self.device, lambda: [step() for _ in range(self.args.steps)])
        ms_per_sample = 1000 * seconds / (self.args.steps * batch_size)
        return {"ms_per_sample": ms_per_sample, "samples_per_s": 1000 / ms_per_sample}


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        gc_text = "on" if r["checkpointing"] else "off"
        if r["status"] == "ok":
            rows.append([r["path"], r["batch"], gc_text, f"{r['ms_per_sample']:.1f}", f"{r['samples_per_s']:.2f}",
                         measure.format_bytes(r["peak_bytes"]),
                         measure.format_bytes(max(0, r["peak_bytes"] - r["baseline_bytes"]))])
        else:
            rows.append([r["path"], r["batch"], gc_text, r["status"], "-", "-", "-"])
    return measure.markdown_table(["path", "batch", "grad ckpt", "ms/sample", "samples/s", "peak memory",
                                  "above model"], rows)


def fields(case: str) -> dict:
    path, batch, flag = case.split(":")
    return {"path": path, "batch": int(batch), "checkpointing": flag == "1"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results, header, device, isolated = run_cases(__file__, argv, args, Bench, cases(args), fields)
    print(f"\nTraining throughput ({args.warmup} warm-up + {args.steps} timed steps per case)")
    print(header)
    print(measure.memory_label(device, isolated) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
