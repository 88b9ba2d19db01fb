"""`--engine hf | vllm` and vLLM's settings, shared by `apa predict`, `apa score` and `apa serve`."""

from __future__ import annotations

import argparse

# apa's --dtype names -> vLLM's
VLLM_DTYPES = {"auto": "auto", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
               "float16": "float16", "fp32": "float32", "float32": "float32"}
VLLM_ONLY = ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "vllm_arg")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                       help="hf (default): apa's own decoders on transformers; vllm: vLLM's engine (continuous "
                            "batching, prefix caching, LoRA, parallelism) with the same template, greedy values "
                            "and expected scores; needs a model folder in the release layout (apa export) and "
                            "vLLM installed (README, Install)")
    group.add_argument("--tensor-parallel-size", type=int, default=None, metavar="N",
                       help="vllm: GPUs one copy of the model is split over (default 1)")
    group.add_argument("--pipeline-parallel-size", type=int, default=None, metavar="N",
                       help="vllm: pipeline stages, across machines through Ray (default 1)")
    group.add_argument("--max-model-len", type=int, default=None, metavar="TOKENS",
                       help="vllm: longest prompt + response (default 4096; the audio of a 30 s clip is 750)")
    group.add_argument("--vllm-arg", action="append", default=None, metavar="KEY=VALUE",
                       help="vllm: any other engine argument of vllm.LLM, e.g. gpu_memory_utilization=0.8 or "
                            "distributed_executor_backend=ray (repeatable; values read as JSON)")


def load_for_inference(args: argparse.Namespace, device):
    """(model, processor) for the chosen engine: transformers' model, or a VllmEngine that
    apa.inference.decoding hands every batch to."""
    from apa.errors import ApaError

    if args.engine != "vllm":
        given = [name for name in VLLM_ONLY if getattr(args, name, None) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ApaError(f"{flags} set{'s' if len(given) == 1 else ''} vLLM's engine; add --engine vllm "
                           "(with --engine hf it would have no effect)")
        from apa.backbones.loading import load_model_and_processor

        return load_model_and_processor(args.model, adapter=args.adapter, dtype=args.dtype, device=device)
    from apa.inference.vllm_engine import EngineSettings, VllmEngine, parse_engine_args

    if getattr(args, "decoding", None) == "constrained-sequential":
        raise ApaError("--decoding constrained-sequential is the hf engine's slot-by-slot decoder; with --engine "
                       "vllm use --decoding constrained (the same values and expected scores)")
    if args.dtype not in VLLM_DTYPES:
        raise ApaError(f"--dtype {args.dtype!r} is not one vLLM takes; choose auto, bf16, fp16 or fp32")
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ApaError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    settings = EngineSettings(dtype=VLLM_DTYPES[args.dtype], max_model_len=args.max_model_len or 4096,
                              tensor_parallel_size=args.tensor_parallel_size or 1,
                              pipeline_parallel_size=args.pipeline_parallel_size or 1,
                              extra=parse_engine_args(args.vllm_arg or []))
    engine = VllmEngine(args.model, adapters={"adapter": args.adapter} if args.adapter else None,
                        settings=settings)
    return engine, engine.processor
