"""Constrained decoding on speechocean762 test utterances: parallel passes beside the slot-by-slot
decoder and naive generation, in one run.

For every utterance of the manifest (``--limit`` for fewer), decoded in length-sorted batches
with the parallel decoder (``--decoding constrained``), it reports per task:

- **sequential model calls per utterance** (median, p95), what a batch of one costs:
  ``parallel`` measured (a prefill and the passes until the row's values stop changing);
  ``sequential`` (a prefill, a chunk per score slot, a probe where a slot's values have side
  tokens: 2 x slots + 1 for Qwen's tokenizer) and ``naive generate`` (one call per response
  token, the end of turn included) counted from each utterance's template;
- **tokens processed per batch** (positions fed through the text model, padding included) and
  **CPU seconds per batch** at batch 1 and at ``--batch-size``, measured for all three on the
  first ``--timed-batches`` batches;
- with ``--check``, the parallel decoder's values against the sequential decoder's on every
  utterance (identical values; the largest expected-score difference);
- with ``--train MANIFEST``, the same calls when the first guesses are the training set's most
  frequent value per field instead of 10.

    python bench/constrained_decoding.py --model runs/proxy/model/train/model \\
        --data runs/proxy/data/model_test.jsonl --tasks word_sentence --check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", required=True, help="model folder (a trained one: e.g. the proxy's)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder, if any")
    parser.add_argument("--data", required=True, help="manifest of the utterances (e.g. the proxy's test split)")
    parser.add_argument("--tasks", nargs="+", default=["word_sentence"], help="tasks (default word_sentence)")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--timed-batches", type=int, default=2,
                        help="batches timed with every algorithm, at batch 1 and --batch-size (default 2)")
    parser.add_argument("--check", action="store_true", help="also decode everything slot by slot and compare")
    parser.add_argument("--train", default=None, help="training manifest: also try its modes as first guesses")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser.parse_args(argv)


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def template_calls(processor, utts, task) -> tuple[list[int], list[int]]:
    """Per utterance: the sequential decoder's calls and naive generation's calls."""
    from apa.inference.slots import TemplateTokens
    from apa.targets import format_scores, reference_scores

    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    sequential, naive = [], []
    for utt in utts:
        plan = tokens.plan(utt, task)
        sequential.append(1 + len(plan.tries) + sum(bool(t.side_paths) for t in plan.tries))
        naive.append(len(tokens.tokenize(format_scores(utt, task, reference_scores(utt)))) + 1)
    return sequential, naive


def decode_all(model, processor, utts, task, batch_size: int, decoding: str, **options):
    from apa.data.audio import load_audio
    from apa.inference.decoding import DecodeStats, decode_batch
    from apa.inference.predict import estimated_length, length_sorted_batches

    stats = DecodeStats()
    order = length_sorted_batches([estimated_length(processor, u, task) for u in utts], batch_size)
    results = [None] * len(utts)
    for indices in order:
        batch = [utts[i] for i in indices]
        decoded = decode_batch(model, processor, batch, task, audios=[load_audio(u.audio_path) for u in batch],
                               decoding=decoding, stats=stats, **options)
        for i, row in zip(indices, decoded):
            results[i] = row
    return results, stats


def timed(model, processor, utts, task, decoding: str) -> tuple[float, int]:
    """(seconds, token positions) of decoding ``utts`` as one batch; free decoding is forced to
    write the whole template (as a model that follows it would)."""
    from apa.collate import build_generation_batch, move_to
    from apa.inference.decoding import DecodeStats, decode_batch, model_device_dtype

    stats = DecodeStats()
    if decoding != "free":
        start = time.perf_counter()
        decode_batch(model, processor, utts, task, decoding=decoding, stats=stats)
        return time.perf_counter() - start, stats.tokens_per_batch[-1]
    import torch

    from apa.inference.decoding import calling_between
    from apa.inference.free import checkpoint_generation_defaults_ignored, greedy_generation_config

    sequential, naive = template_calls(processor, utts, task)
    batch = move_to(build_generation_batch(processor, utts, task), *model_device_dtype(model))
    config = greedy_generation_config(processor, max(naive))
    config.min_new_tokens = max(naive)
    start = time.perf_counter()
    with torch.inference_mode(), checkpoint_generation_defaults_ignored(model), \
            calling_between(model, processor, None) as calls:
        model.generate(**processor.generate_inputs(batch), generation_config=config)
    return time.perf_counter() - start, calls[1]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from apa.backbones.loading import load_model_and_processor
    from apa.data.manifest import read_manifest
    from apa.targets import ScoreSet, response_template, value_modes
    from apa.tasks import get_task

    model, processor = load_model_and_processor(args.model, adapter=args.adapter, device="cpu", dtype="float32")
    utts = read_manifest(args.data)
    utts = utts[:args.limit] if args.limit else utts
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"{len(utts)} utterances of {args.data}, batch {args.batch_size}, {torch.get_num_threads()} threads\n")
    for name in args.tasks:
        task = get_task(name)
        start = time.perf_counter()
        parallel, stats = decode_all(model, processor, utts, task, args.batch_size, "constrained")
        seconds = time.perf_counter() - start
        sequential, naive = template_calls(processor, utts, task)
        rows = [["parallel (first guess 10)", statistics.median(stats.calls_per_row),
                 percentile(stats.calls_per_row, 0.95)]]
        if args.train:
            initial = value_modes(read_manifest(args.train), task)
            _, by_mode = decode_all(model, processor, utts, task, args.batch_size, "constrained", initial=initial)
            rows.append(["parallel (first guess: training mode)", statistics.median(by_mode.calls_per_row),
                         percentile(by_mode.calls_per_row, 0.95)])
        rows += [["sequential (slot by slot)", statistics.median(sequential), percentile(sequential, 0.95)],
                 ["naive generate (token by token)", statistics.median(naive), percentile(naive, 0.95)]]
        print(f"## task {name}: sequential model calls per utterance (batch of one)\n")
        print(measure.markdown_table(["decoder", "median", "p95"], rows))
        print(f"\nparallel, batches of {args.batch_size}: {stats.batches} batches, calls per batch median "
              f"{statistics.median(stats.calls_per_batch)}, most {max(stats.calls_per_batch)}; all "
              f"{len(utts)} utterances in {seconds:.0f} s\n")

        timings = []
        groups = [("1", [[u] for u in utts[:args.timed_batches]]),
                  (str(args.batch_size), [utts[i:i + args.batch_size]
                                          for i in range(0, args.batch_size * args.timed_batches, args.batch_size)
                                          if utts[i:i + args.batch_size]])]
        timed(model, processor, utts[:1], task, "constrained")  # warm-up, untimed
        for size, batches in groups:
            for decoding, label in (("constrained", "parallel"), ("constrained-sequential", "sequential"),
                                    ("free", "naive generate")):
                runs = [timed(model, processor, batch, task, decoding) for batch in batches]
                timings.append([label, size, f"{statistics.mean(s for s, _ in runs):.2f}",
                                f"{statistics.mean(t for _, t in runs):,.0f}"])
        print(f"CPU time and tokens per batch (mean of {args.timed_batches} batches):\n")
        print(measure.markdown_table(["decoder", "batch", "seconds per batch", "token positions per batch"], timings))
        print()

        if args.check:
            start = time.perf_counter()
            slot_by_slot, _ = decode_all(model, processor, utts, task, args.batch_size, "constrained-sequential")
            same, largest = 0, 0.0
            for utt, a, b in zip(utts, parallel, slot_by_slot):
                same += a["output"] == b["output"]
                slots = [p for p in response_template(utt, task) if not isinstance(p, str)]
                ea, eb = ScoreSet.from_dict(a["expected"]), ScoreSet.from_dict(b["expected"])
                largest = max([largest] + [abs(s.value(ea) - s.value(eb)) for s in slots])
            print(f"check: parallel values equal the sequential decoder's on {same} of {len(utts)} utterances; "
                  f"largest expected-score difference {largest:.2e} (sequential pass {time.perf_counter() - start:.0f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
