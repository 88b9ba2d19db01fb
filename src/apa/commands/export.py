"""`apa export --model BASE --adapter A --out DIR [--merge]`: a trained adapter as other tools
load it.

Without ``--merge``: the adapter with its weights named for the release (apa.backbones.release;
adapters apa wrote before that are renamed here), beside the files a server needs: the
processor (tokenizer, chat template, audio front end) and the generation config. With
``--merge``: one model folder, the adapter merged into the weights, in the release layout: what
vLLM needs for Qwen2-Audio, which it runs without LoRA. Either way the folder keeps what apa
itself reads from a trained adapter: the training lexicon and apa_run.json.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on (folder or hub id)")
    parser.add_argument("--adapter", required=True, help="the adapter folder (apa train's OUT/adapter)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--merge", action="store_true",
                        help="merge the adapter into the weights and write one model folder")
    parser.add_argument("--dtype", default="auto",
                        help="dtype of the written weights with --merge (auto: bf16 on a bf16 GPU, else float32)")
    parser.add_argument("--device", default=None, help="where to merge (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from apa.backbones.loading import load_model_and_processor
    from apa.backbones.release import save_adapter, save_model
    from apa.data.lexicon import MODEL_LEXICON
    from apa.errors import ApaError

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ApaError(f"--out {out} exists and is not an empty folder; choose a new one")
    model, processor = load_model_and_processor(args.model, adapter=args.adapter, dtype=args.dtype,
                                                device=args.device)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.merge:
            save_model(model.merge_and_unload(), processor, out)
        else:
            model.peft_config["default"].base_model_name_or_path = str(args.model)
            save_adapter(model, type(processor), out)
            processor.save_pretrained(out)
            model.get_base_model().generation_config.save_pretrained(out)
        for name in (MODEL_LEXICON, "apa_run.json"):
            if (Path(args.adapter) / name).is_file():
                shutil.copy2(Path(args.adapter) / name, out / name)
    except OSError as e:
        raise ApaError(f"cannot write the export to {out}: {e.strerror or e}; choose another --out") from None
    what = "merged model" if args.merge else "adapter"
    use = f"--model {out}" if args.merge else f"--model {args.model} --adapter {out}"
    print(f"wrote the {what} in the release layout to {out}; use it with {use}")
    return 0
