"""CPU cost of acoustic evidence (apa.evidence.acoustic) on real speechocean762 clips: apa's
free loop over context-independent phones (ours) beside the context-dependent loop (naive:
the recogniser's default way to hear phones in context), same clips, same alignment passes.

    python bench/evidence_cost.py --manifest data/so762_test.jsonl [--clips 200] [--naive-clips 3]

CPU seconds are this process's (pocketsphinx runs on one thread), measured around the three
passes only (audio decoded beforehand); "CPU s / audio s" is the figure to compare across
machines of similar speed. A clip whose alignment fails still counts (it is scored from the
loop alone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def cost(model, clips) -> dict:
    cpu = 0.0
    failed = 0
    for audio, phones in clips:
        started = time.process_time()
        record = model.evidence(audio, phones)
        cpu += time.process_time() - started
        failed += not record["aligned"]
    seconds = sum(len(audio) for audio, _ in clips) / 16000
    return {"clips": len(clips), "audio_s": seconds, "cpu_s": cpu, "per_audio_s": cpu / seconds, "failed": failed}


def main() -> None:
    from apa.data.audio import load_audio
    from apa.data.manifest import read_manifest
    from apa.evidence.acoustic import AcousticModel
    from measure import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="manifest of real clips (apa prepare so762)")
    parser.add_argument("--clips", type=int, default=200, help="clips for ours (default 200)")
    parser.add_argument("--naive-clips", type=int, default=3, help="clips for the naive loop (default 3: it is slow)")
    args = parser.parse_args()

    utts = read_manifest(args.manifest)[:max(args.clips, args.naive_clips)]
    clips = [(load_audio(u.audio_path), [w.phones for w in u.words]) for u in utts]
    ours = cost(AcousticModel(), clips[:args.clips])
    naive = cost(AcousticModel(context_dependent_loop=True), clips[:args.naive_clips])
    ours_same = cost(AcousticModel(), clips[:args.naive_clips])
    rows = [[name, r["clips"], f"{r['audio_s']:.1f}", f"{r['cpu_s']:.2f}", f"{r['per_audio_s']:.3f}", r["failed"]]
            for name, r in (("naive: context-dependent loop", naive), ("ours, the same clips", ours_same),
                            ("ours: context-independent loop", ours))]
    print(markdown_table(["free phone loop", "clips", "audio s", "CPU s", "CPU s / audio s", "alignments failed"],
                         rows))
    print(f"\nnaive / ours on the same {args.naive_clips} clips: "
          f"{naive['per_audio_s'] / ours_same['per_audio_s']:.0f} x the CPU time")


if __name__ == "__main__":
    main()
