"""apa: score English pronunciation with fine-tuned audio language models (Qwen2-Audio,
Qwen2.5-Omni, Phi-4-multimodal, Granite-Speech).

Each subcommand lives in apa.commands.<name> with add_arguments/run. Nothing heavy is imported until a subcommand runs, so `apa --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from apa.errors import ApaError

# name -> (module under apa.commands, one-line help)
COMMANDS = {
    "demo": ("demo", "offline end-to-end run on a tiny model: train, predict, evaluate"),
    "prepare": ("prepare", "build manifests from speechocean762 (official layout or Hugging Face)"),
    "validate": ("validate", "check a manifest and report every problem"),
    "evidence": ("evidence", "a pretrained acoustic model's alignment and GOP for every utterance of a manifest"),
    "prompt": ("prompt", "print the exact prompt and reference target of one utterance"),
    "tiny-model": ("tiny_model", "write a tiny random model of a backbone (qwen2-audio, qwen2.5-omni, phi4-mm, "
                                 "granite-speech), built offline"),
    "predict": ("predict", "generate score text for a manifest (batched, resumable)"),
    "evaluate": ("evaluate", "PCC/SCC/RMSE/Kendall of predictions against a manifest"),
    "train": ("train", "LoRA fine-tuning with SFT, SimPO+CE or DPO from a YAML config"),
    "pairs": ("pairs", "write simulated preference pairs for inspection"),
    "baseline": ("baseline", "a regression from a pretrained acoustic model's evidence (GOP) to a task's scores"),
    "proxy": ("proxy", "the real-data proof: train a small model from scratch on speechocean762 and compare with controls"),
    "score": ("score", "score one recording against its text: JSON with sentence, word and phone scores"),
    "serve": ("serve", "HTTP scoring service for any backbone: the learner's page, POST /score, GET /speak, "
                       "/health, /metrics, OpenAPI"),
    "export": ("export", "an adapter as other tools load it: renamed for the release, or merged into the model"),
    "report": ("report", "assemble evaluations of several runs into the paper's Tables 1-3"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(prog="apa", description=__doc__.split("\n\n")[0])
    from apa import __version__

    parser.add_argument("--version", action="version", version=f"apa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"apa.commands.{module_name}")
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ApaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is saved and the command can be resumed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (apa score ... | head): not an error of ours. Point stdout at
        # devnull so that the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
