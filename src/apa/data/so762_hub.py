"""speechocean762 from its Hugging Face copy (`apa prepare so762 --hub`) -> manifests.

The copy (``mispeech/speechocean762``) holds the labels of each utterance in a row, in the
official scores.json layout (apa.data.so762.convert_entry reads them), with the audio
embedded: each clip is written as a 16 kHz FLAC under OUT/audio/ and the manifest points at
it. Without network access every failure says to pass ``--root`` with a local copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from apa.data.audio import SAMPLE_RATE, AudioError
from apa.data.manifest import Utterance, record_problems
from apa.data.so762 import SPLITS, CorpusProblems, Log, audio_field, convert_entry, write_splits
from apa.errors import ApaError
from apa.files import atomic_write

HUB_DATASET = "mispeech/speechocean762"


def _hub_failure(name: str, e: BaseException) -> ApaError:
    detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
    detail = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    if len(detail) > 300:
        detail = detail[:300] + "..."
    return ApaError(f"cannot load {name} from the Hugging Face Hub ({detail}); without network access, "
                    "pass --root DIR with a local copy of speechocean762 in the official layout")


def _decode_clip(audio: Any, utt_id: str) -> Any:
    """The Hub's audio cell ({"bytes", "path"} undecoded, or {"array", "sampling_rate"}) -> 16 kHz mono."""
    import numpy as np
    from apa.data.audio import decode_audio_bytes, to_mono_16k

    if isinstance(audio, dict) and audio.get("array") is not None:
        return to_mono_16k(np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"]),
                           name=f"utterance {utt_id}")
    data = audio.get("bytes") if isinstance(audio, dict) else None
    if data is None and isinstance(audio, dict) and audio.get("path") and Path(audio["path"]).is_file():
        data = Path(audio["path"]).read_bytes()
    if not data:
        raise AudioError(f"utterance {utt_id} has no audio in the Hub copy; use --root with a local copy")
    # Corpus clips are checked for length by prepare itself, not rejected here.
    return decode_audio_bytes(data, name=f"utterance {utt_id}", check=False)


def _write_flac(path: Path, samples: Any) -> None:
    import soundfile as sf

    with atomic_write(path, "wb") as f:
        sf.write(f, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def _hub_rows(name: str, split: str):
    try:
        import datasets
    except ImportError:
        raise ApaError("--hub needs the `datasets` library, which is not installed: "
                       "pip install 'apa[hub]'; or pass --root DIR with a local copy of speechocean762 "
                       "in the official layout") from None
    try:
        ds = datasets.load_dataset(name, split=split)
        # Undecoded audio ({"bytes", "path"}): soundfile decodes it, no torchcodec needed.
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    except ApaError:
        raise
    except Exception as e:  # connection, offline mode, missing dataset: all say the same thing
        raise _hub_failure(name, e) from None
    return ds


def read_so762_hub(out_dir: str | os.PathLike, name: str = HUB_DATASET, log: Log = print
                   ) -> dict[str, list[Utterance]]:
    """The Hugging Face copy: labels per row, audio embedded; each clip is written as a 16 kHz
    FLAC under OUT/audio/ and the manifest points at it."""
    out = Path(out_dir).resolve()
    problems: list[str] = []
    splits: dict[str, list[Utterance]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        log(f"loading {name} ({split}) from the Hugging Face Hub")
        rows = _hub_rows(name, split)
        utterances = []
        try:
            for index, row in enumerate(rows):
                where = f"{name} {split}[{index}]"
                audio = row.get("audio")
                path = audio.get("path") if isinstance(audio, dict) else None
                utt_id = Path(path).stem if path else row.get("id")
                if not utt_id:
                    problems.append(f"{where}: audio: no file name to take the utterance id from")
                    continue
                utt_id = str(utt_id)
                where = f"{where} (utterance {utt_id})"
                if utt_id in seen:
                    problems.append(f"{where}: id: duplicate utterance id (also in {seen[utt_id]})")
                    continue
                seen[utt_id] = split
                before = len(problems)
                converted = convert_entry(utt_id, row, where, problems)
                try:
                    samples = _decode_clip(audio, utt_id)
                except AudioError as e:
                    problems.append(f"{where}: audio: {e}")
                    continue
                if converted is None or len(problems) > before:
                    continue
                flac = out / "audio" / f"{utt_id}.flac"
                _write_flac(flac, samples)
                info = {}
                if row.get("age") is not None:
                    info["age"] = int(row["age"])
                if row.get("gender") is not None:
                    info["gender"] = str(row["gender"])
                text, scores, words = converted
                utt = Utterance(id=utt_id, audio=audio_field(flac, out), text=text, words=words,
                                speaker=None if row.get("speaker") is None else str(row["speaker"]),
                                speaker_info=info or None,
                                duration=round(len(samples) / SAMPLE_RATE, 4), scores=scores, base_dir=out)
                errors = record_problems(utt.to_dict())
                problems += [f"{where}: manifest record: {p}" for p in errors]
                if not errors:
                    utterances.append(utt)
        except ApaError:
            raise
        except Exception as e:  # a download that breaks off while iterating
            raise _hub_failure(name, e) from None
        if not utterances and not problems:
            problems.append(f"{name} {split}: no rows; check the dataset name")
        splits[split] = sorted(utterances, key=lambda u: u.id)
    if problems:
        raise CorpusProblems(problems, what=name)
    return splits


def prepare_so762_hub(out_dir: str | os.PathLike, name: str = HUB_DATASET, log: Log = print
                      ) -> dict[str, Path]:
    """Hugging Face copy -> OUT/audio/*.flac, OUT/so762_train.jsonl and OUT/so762_test.jsonl."""
    splits = read_so762_hub(out_dir, name, log)
    return write_splits(out_dir, splits, log)
