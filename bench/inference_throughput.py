"""Inference throughput: stock greedy generation against apa's two constrained decoders, in one run.

Every row is the same synthetic SO762-like test utterance under the `multi` task (a clip of
``--audio-seconds``, a prompt of ``--prompt-tokens`` text tokens) whose response template
has about ``--target-tokens`` tokens; equal lengths, so no padding.

- ``naive``: ``model.generate`` greedy (apa's free decoding configuration), forced to
  produce exactly as many tokens as the template holds (min_new_tokens = max_new_tokens,
  so that random weights cost what a trained model's answer costs): one sequential model
  call per token. ``--static-cache`` adds rows with transformers' static KV cache.
- ``sequential``: apa's slot-by-slot constrained decoder (``--decoding constrained-sequential``):
  the fixed text is fed in chunks through the KV cache and the model only chooses at the score
  slots, two sequential calls per slot plus one prefill, whatever the template's length.
- ``parallel``: apa's default constrained decoder (``--decoding constrained``): fixed-point
  passes over the whole template, a handful of calls (random weights converge slowest).

Model calls and token positions (padding included) are counted by apa's own call counter.

Feature extraction (CPU, the same for every path) is done once before timing. Prints a
markdown table: path, batch, utterances/s, seconds per batch, sequential model calls and
token positions per batch, peak memory. A batch size that runs out of memory shows "OOM".

    python bench/inference_throughput.py --quick                            # CPU, tiny model
    python bench/inference_throughput.py --shape real --naive-batch-sizes 1,32,96 \\
        --batch-sizes 32,96 --static-cache                                   # one H100
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

QUICK = {"naive_batch_sizes": [1, 8], "batch_sizes": [8, 32], "warmup": 0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    models.add_common_arguments(parser)
    parser.add_argument("--batch-sizes", type=models.int_list, default=None,
                        help="batch sizes of the constrained decoders (default 32,96)")
    parser.add_argument("--naive-batch-sizes", type=models.int_list, default=None,
                        help="batch sizes of model.generate (default 1,32)")
    parser.add_argument("--static-cache", action="store_true",
                        help="also time model.generate with cache_implementation='static'")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs of each case before the timed ones (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each case (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small settings for a CPU check with a test shape: naive batches 1,8, "
                             "ours 8,32, no warm-up runs (explicit options still win)")
    args = parser.parse_args(argv)
    models.check_common_arguments(parser, args)
    defaults = QUICK if args.quick else {"naive_batch_sizes": [1, 32], "batch_sizes": [32, 96], "warmup": 1}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    return args


PATHS = {"sequential": "constrained-sequential", "parallel": "constrained"}  # path -> apa decoding mode


def cases(args) -> list[str]:
    """Case names "naive:batch:cache", "sequential:batch" and "parallel:batch", naive first."""
    caches = ["dynamic", "static"] if args.static_cache else ["dynamic"]
    return [f"naive:{batch}:{cache}" for cache in caches for batch in args.naive_batch_sizes] + \
        [f"{path}:{batch}" for path in PATHS for batch in args.batch_sizes]


class Bench:
    """The model, the benchmark utterance and its inputs, shared by every case of this process."""

    def __init__(self, args):
        import torch

        from apa.inference.slots import TemplateTokens
        from apa.targets import format_scores
        from apa.tasks import get_task

        self.args = args
        self.device, self.dtype, self.model, self.processor = models.setup(args)
        self.task = get_task("multi")
        tokenizer = self.processor.tokenizer
        self.utt = inputs.bench_utterance(self.processor, self.task, args.target_tokens)
        clip = inputs.speech_like_clip(args.audio_seconds, args.seed)
        sample = inputs.sample_row(self.processor, self.task, clip, self.utt, args.prompt_tokens, args.target_tokens)
        self.prompt = {"input_ids": sample["prompt_ids"], "attention_mask": torch.ones_like(sample["prompt_ids"]),
                       **sample["audio"]}
        self.n_audio = inputs.count_audio_tokens(sample, self.processor)
        response = format_scores(self.utt, self.task) + self.processor.end_of_turn
        # The template's length: what constrained decoding writes and generate is forced to write.
        self.new_tokens = len(tokenizer(response, add_special_tokens=False)["input_ids"])
        self.real_lower_bound = inputs.pretoken_count(tokenizer, response)
        self.slots = len(TemplateTokens(tokenizer, self.processor.end_of_turn_id).plan(self.utt, self.task).slots)
        self.warmed_up = False

    def describe(self) -> str:
        utt = self.utt
        n_phones = sum(len(w.phones) for w in utt.words)
        prompt_len = self.prompt["input_ids"].shape[1]
        return (models.describe_setup(self.args, self.device, self.dtype, self.model) + "\n"
                f"utterance: {len(utt.words)} words, {n_phones} phones ({utt.text}); prompt {prompt_len} tokens = "
                f"{self.n_audio} audio ({self.args.audio_seconds:g} s) + {prompt_len - self.n_audio} text\n"
                f"response template: {self.new_tokens} tokens with the tiny tokenizer (real tokenizer: at least "
                f"{self.real_lower_bound}, its pre-token count), {self.slots} score slots")

    def batch(self, batch_size: int) -> dict:
        from apa.collate import move_to

        rows = inputs.repeat_rows(self.prompt, batch_size)
        return move_to(rows, self.device, dtype=self.dtype)

    def naive(self, batch: dict, cache: str, new_tokens: int | None = None) -> list[int]:
        """[model calls, token positions] of generate forced to write the template's length."""
        import torch

        from apa.inference.decoding import calling_between
        from apa.inference.free import checkpoint_generation_defaults_ignored, greedy_generation_config

        new_tokens = new_tokens or self.new_tokens
        config = greedy_generation_config(self.processor, new_tokens)  # as apa's free decoding runs it
        config.min_new_tokens = new_tokens
        if cache == "static":
            config.cache_implementation = "static"
        with torch.inference_mode(), checkpoint_generation_defaults_ignored(self.model), \
                calling_between(self.model, self.processor, None) as calls:
            sequences = self.model.generate(**self.processor.generate_inputs(batch), generation_config=config)
        made = sequences.shape[1] - batch["input_ids"].shape[1]
        if made != new_tokens:
            raise RuntimeError(f"generate made {made} tokens, not {new_tokens}")
        return calls

    def ours(self, batch: dict, path: str) -> list[int]:
        """[model calls, token positions] of one of apa's constrained decoders on the batch."""
        from apa.inference.decoding import DECODERS, calling_between

        rows = batch["input_ids"].shape[0]
        with calling_between(self.model, self.processor, None) as calls:
            results = DECODERS[PATHS[path]](self.model, self.processor, batch, [self.utt] * rows, self.task, None)
        if len(results) != rows:
            raise RuntimeError("constrained decoding returned the wrong number of rows")
        return calls

    def warm_up(self) -> None:
        """Once per process: first calls (kernel selection, lazy initialisation) untimed."""
        if not self.warmed_up:
            batch = self.batch(1)
            self.naive(batch, "dynamic", new_tokens=2)
            self.ours(batch, "parallel")
            self.warmed_up = True

    def run(self, case: str) -> dict:
        parts = case.split(":")
        path, batch_size = parts[0], int(parts[1])
        cache = parts[2] if path == "naive" else None
        self.warm_up()
        result = measure.measure(self.device, lambda: self._time(path, batch_size, cache))
        measure.free_memory(self.device)
        return dict(result, path=path, batch=batch_size, cache=cache)

    def _time(self, path: str, batch_size: int, cache: str | None) -> dict:
        batch = self.batch(batch_size)
        run = (lambda: self.naive(batch, cache)) if path == "naive" else (lambda: self.ours(batch, path))
        for _ in range(self.args.warmup):
            run()
        counted = []
        seconds = measure.timed(self.device, lambda: counted.extend(run() for _ in range(self.args.repeats)))
        seconds /= self.args.repeats
        calls, tokens = counted[-1]
        return {"seconds_per_batch": seconds, "utterances_per_s": batch_size / seconds, "calls": calls,
                "tokens": tokens}


def label(result: dict) -> str:
    if result["path"] == "naive":
        return "naive generate" + (" (static cache)" if result.get("cache") == "static" else "")
    return f"ours constrained, {result['path']}"


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        if r["status"] == "ok":
            rows.append([label(r), r["batch"], f"{r['utterances_per_s']:.3g}", f"{r['seconds_per_batch']:.2f}",
                         r["calls"], f"{r['tokens']:,}", measure.format_bytes(r["peak_bytes"])])
        else:
            rows.append([label(r), r["batch"], r["status"], "-", "-", "-", "-"])
    return measure.markdown_table(["path", "batch", "utterances/s", "s/batch", "sequential model calls per batch",
                                  "token positions per batch", "peak memory"], rows)


def fields(case: str) -> dict:
    parts = case.split(":")
    return {"path": parts[0], "batch": int(parts[1]), "cache": parts[2] if len(parts) > 2 else None}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results, header, device, isolated = run_cases(__file__, argv, args, Bench, cases(args), fields)
    print(f"\nInference throughput ({args.warmup} warm-up + {args.repeats} timed run(s) per case)")
    print(header)
    print(measure.memory_label(device, isolated) + "\n")
    print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
