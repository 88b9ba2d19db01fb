"""`apa predict`: generate score text for every utterance of a manifest (batched, resumable)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.backbones import default_model
    from apa.tasks import TASKS

    parser.add_argument("--model", default=default_model(),
                        help=f"base model: a directory or hub id (default {default_model()}, needs the network "
                             "or the local cache)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory saved by `apa train`")
    parser.add_argument("--data", required=True, metavar="MANIFEST", help="manifest (JSONL) of utterances to score")
    parser.add_argument("--task", required=True, choices=list(TASKS), help="which scores to generate")
    parser.add_argument("--out", required=True, metavar="PRED.jsonl",
                        help="predictions file; ids already in it are skipped (resume). Under torchrun / "
                             "accelerate launch each process writes PRED.rankR-of-N.jsonl beside it, and "
                             "rank 0 merges them into PRED.jsonl at the end")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N utterances of the manifest")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per generate call (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="token budget per response (default: 1.5 x the longest valid response + 16)")
    parser.add_argument("--decoding", default="auto",
                        choices=["auto", "constrained", "constrained-sequential", "free"],
                        help="constrained: only score values are chosen, every output parses, expected "
                             "scores are written beside the most likely ones, in a handful of parallel passes; "
                             "constrained-sequential: the same values slot by slot (two model calls per score); "
                             "free: plain greedy text (the paper's decoding). auto (default): constrained for a "
                             "model apa trained (--adapter, or a model folder with apa_run.json: a full fine-tune "
                             "or apa export --merge), free for a base model (the zero-shot evaluation)")
    parser.add_argument("--evidence", default=None, metavar="FILE",
                        help="acoustic evidence of the manifest, for a model trained with it (evidence: gop): "
                             "default MANIFEST.evidence.jsonl beside it, computed there when missing (apa evidence)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU that has it, else float32), "
                                                         "bf16, fp16 or fp32")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from apa.commands.engine import add_engine_arguments

    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from apa.data.manifest import read_manifest
    from apa.errors import ApaError
    from apa.distributed import Processes
    from apa.inference.predict import predict_manifest
    from apa.commands.engine import load_for_inference
    from apa.tasks import get_task

    task = get_task(args.task)
    if args.limit is not None and args.limit < 1:
        raise ApaError(f"--limit must be at least 1, got {args.limit}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ApaError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    decoding = args.decoding
    from apa.backbones.loading import run_info

    # a model apa trained (an adapter, or a model folder with apa_run.json: a full fine-tune or a
    # merged export) is decoded under the template; a base model freely (the zero-shot row)
    trained = bool(args.adapter or run_info(args.model))  # run_info: {} for a hub id or a folder without it
    if decoding == "auto":
        decoding = "constrained" if trained else "free"
    utts = read_manifest(args.data)
    if args.limit is not None:
        utts = utts[:args.limit]
    # Under torchrun / accelerate launch (WORLD_SIZE > 1) each process predicts a shard on
    # cuda:LOCAL_RANK (or the CPU) and rank 0 merges the shards into --out.
    processes = Processes.from_environment()
    if processes.several and args.engine == "vllm":
        raise ApaError("--engine vllm runs one engine that spreads the work itself (--tensor-parallel-size, "
                       "--pipeline-parallel-size); start apa predict once, not under torchrun")
    model, processor = load_for_inference(args, processes.device(args.device))
    if processor.evidence:  # the model reads a pretrained acoustic model's evidence in its prompt
        from apa.evidence.extract import default_jobs, with_evidence
        from apa.evidence.store import evidence_path

        source = args.evidence or evidence_path(args.data)
        print(f"evidence: {processor.evidence} (the model was trained with it), from {source}", file=sys.stderr)
        utts = with_evidence(utts, args.data, out=source, jobs=default_jobs(),
                             progress=not args.no_progress)
    if args.decoding == "auto":
        print(f"decoding: {decoding} ({'a model apa trained' if trained else 'a base model: zero-shot'})",
              file=sys.stderr)
    summary = predict_manifest(model, processor, utts, task, args.out, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens, decoding=decoding,
                               progress=not args.no_progress, processes=processes)
    if not processes.is_main:
        return 0
    by = f" by {processes.world_size} processes" if processes.several else ""
    print(f"{summary.new} predicted{by}, {summary.skipped} already in {args.out}")
    print(f"parse rate: {summary.parse_rate:.1%} ({summary.parsed}/{summary.total} outputs parse without problems)")
    if summary.calls_text():
        print(summary.calls_text())
    return 0
