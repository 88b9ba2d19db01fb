"""`apa prompt`: the exact model input text and reference target of one utterance."""

from __future__ import annotations

import argparse

from apa.errors import ApaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from apa.backbones import BACKBONES, DEFAULT_BACKBONE
    from apa.tasks import TASKS

    parser.add_argument("--task", required=True, choices=list(TASKS), help="task of the task table")
    parser.add_argument("--manifest", required=True, help="manifest JSONL holding the utterance")
    parser.add_argument("--id", required=True, help="utterance id")
    parser.add_argument("--evidence", default="none", choices=["none", "gop"],
                        help="with gop: the prompt of a model trained with acoustic evidence (read from "
                             "MANIFEST.evidence.jsonl beside the manifest, computed there when missing)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=list(BACKBONES),
                        help=f"whose chat template renders the prompt (default {DEFAULT_BACKBONE})")


def run(args: argparse.Namespace) -> int:
    from apa.backbones import backbone_class
    from apa.data.manifest import read_manifest
    from apa.prompts import instruction, prompt_version
    from apa.targets import MissingScore, format_scores
    from apa.tasks import get_task

    task = get_task(args.task)
    backbone = backbone_class(args.backbone)
    by_id = {utt.id: utt for utt in read_manifest(args.manifest)}
    if args.id not in by_id:
        raise ApaError(f"id {args.id!r} is not in {args.manifest} ({len(by_id)} utterances)")
    utt = by_id[args.id]
    if args.evidence != "none":
        from apa.evidence.extract import with_evidence

        utt = with_evidence([utt], args.manifest, progress=False)[0]
    print(f"# prompt (version {prompt_version(utt)}, task {task.name}, backbone {backbone.name}); "
          f"{backbone.audio_token} is expanded by the processor")
    print(backbone.render(instruction(task, utt)))
    print("# reference target")
    try:
        print(format_scores(utt, task))
    except MissingScore as e:
        print(f"(none: {e}; this utterance cannot be a training example for {task.name})")
    return 0
