"""speechocean762 (SO762) -> manifests: the official release layout, or the Hugging Face copy.

The official release (github.com/jimbozhang/speechocean762) looks like this::

    ROOT/train/ and ROOT/test/   Kaldi files: wav.scp text utt2spk spk2utt spk2age spk2gender
    ROOT/WAVE/SPEAKERnnnn/       audio; wav.scp names each file relative to ROOT
    ROOT/resource/scores.json    labels of all 5,000 utterances

One raw record, as the release stores it (``wav.scp``: ``000010011<TAB>WAVE/SPEAKER0001/000010011.WAV``;
``utt2spk``: ``000010011 0001``; ``spk2age``: ``0001<TAB>6``; ``spk2gender``: ``0001<TAB>m``;
in ``scores.json``, ``phones`` is a list in the final release and a space-separated string in the
release README's example, and both are accepted)::

    "000010011": {"accuracy": 8, "completeness": 10, "fluency": 9, "prosodic": 9, "total": 7,
                  "text": "WE CALL IT BEAR",
                  "words": [{"text": "WE", "accuracy": 10, "stress": 10, "total": 10,
                             "phones": ["W", "IY0"], "phones-accuracy": [2, 2]},
                            {"text": "CALL", "accuracy": 10, "stress": 10, "total": 10,
                             "phones": "K AO0 L", "phones-accuracy": [2, 1.8, 1.8]}, ...]}

becomes this manifest line (``prosodic`` -> ``prosody``; phone scores x5 onto the 0-10 scale; the
audio path comes from wav.scp, relative to the manifest's folder; duration read from the file)::

    {"id": "000010011", "audio": "../so762/WAVE/SPEAKER0001/000010011.WAV", "text": "WE CALL IT BEAR",
     "speaker": "0001", "speaker_info": {"age": 6, "gender": "m"}, "duration": 2.58,
     "scores": {"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 7},
     "words": [{"text": "WE", "phones": ["W", "IY0"],
                "scores": {"accuracy": 10, "stress": 10, "total": 10}, "phone_scores": [10, 10]},
               {"text": "CALL", "phones": ["K", "AO0", "L"],
                "scores": {"accuracy": 10, "stress": 10, "total": 10}, "phone_scores": [10, 9, 9]}, ...]}

Nothing is written unless the whole corpus is clean: every problem (a missing or unreadable clip,
a damaged scores.json, a score out of range, phones and phone scores of different lengths, an
utterance without labels, ...) is collected and reported at once, one line each, naming the file,
the line or utterance, the field and the fix. Output is deterministic (records sorted by id, no
timestamps), so preparing twice gives byte-identical manifests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from apa.data.audio import MAX_SECONDS, SAMPLE_RATE, AudioError, audio_info
from apa.data.manifest import Utterance, Word, record_problems, round_score, write_manifest
from apa.errors import ApaError

SPLITS = ("train", "test")
HUB_DATASET = "mispeech/speechocean762"
# scores.json field -> manifest aspect, in the manifest's canonical order (apa.tasks.ASPECTS).
SENTENCE_FIELDS = {"accuracy": "accuracy", "fluency": "fluency", "prosodic": "prosody",
                   "completeness": "completeness", "total": "total"}
WORD_FIELDS = ("accuracy", "stress", "total")
PHONE_RANGE = (0.0, 2.0)  # SO762 phone scores: mean of five experts on 0-2, in steps of 0.2
PHONE_SCALE = 5  # x5 puts them on the 0-10 scale of every other score
MAX_LISTED = 20

Log = Callable[[str], None]


class CorpusProblems(ApaError):
    """Every problem found while reading a corpus, one line each; nothing was written."""

    def __init__(self, problems: list[str], what: str = "speechocean762"):
        self.problems = problems
        if len(problems) == 1:
            message = f"{problems[0]} (nothing was written)"
        else:
            shown = problems[:MAX_LISTED]
            more = (f"\n  ... and {len(problems) - MAX_LISTED} more"
                    if len(problems) > MAX_LISTED else "")
            message = (f"{len(problems)} problems in {what}; nothing was written:\n  "
                       + "\n  ".join(shown) + more)
        super().__init__(message)


# --------------------------------------------------------------------------- Kaldi files


def read_kaldi_map(path: Path, problems: list[str], required: bool = True
                   ) -> dict[str, tuple[str, int]] | None:
    """``KEY VALUE`` lines (tab or space separated) -> {key: (value, line number)}.

    Problems (missing file, malformed or duplicate line) are appended to ``problems``; None is
    returned when the file cannot be read at all (or is absent and not required).
    """
    if not path.is_file():
        if required:
            problems.append(f"{path}: file does not exist; the official layout has train/ and test/ "
                            "each with wav.scp, text, utt2spk, spk2age and spk2gender: "
                            "pass --root the folder that holds them")
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read ({e}); copy the file again from the release")
        return None
    out: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            problems.append(f"{path}:{lineno}: expected 'KEY VALUE', got {line.strip()!r}; "
                            "add the missing value or delete the line")
            continue
        key, value = parts[0], parts[1].strip()
        if key in out:
            problems.append(f"{path}:{lineno}: duplicate key {key!r} (first on line {out[key][1]}); "
                            "delete one of the two lines")
            continue
        out[key] = (value, lineno)
    return out


# --------------------------------------------------------------------------- scores.json


def load_scores_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The decoded scores.json, or None (with a problem appended) when absent or damaged."""
    if not path.is_file():
        problems.append(f"{path}: file does not exist; the official release has the labels in "
                        "resource/scores.json under --root")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read ({e}); copy the file again from the release")
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(f"{path}: not valid JSON at line {e.lineno} column {e.colno} (char {e.pos} of "
                        f"{len(text)}): {e.msg}; the file is truncated or damaged: copy it again "
                        "from the release")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object mapping utterance ids to labels, got "
                        f"{type(data).__name__}; use the release's resource/scores.json")
        return None
    return data


def _number(value: Any, where: str, low: float, high: float, problems: list[str],
            what: str = "score") -> float | None:
    if value is None:
        problems.append(f"{where}: missing; every SO762 utterance has this {what}: restore it")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        problems.append(f"{where}: {what} {value!r} is not a number; write a number {low:g}-{high:g}")
        return None
    if not low <= value <= high:
        problems.append(f"{where}: {what} {value:g} is outside {low:g}-{high:g}; "
                        f"correct it to a value in {low:g}-{high:g}")
        return None
    return value


def _phones(value: Any) -> list[str] | None:
    """``phones`` as a list (final release, Hugging Face) or a space-separated string (README)."""
    if isinstance(value, str):
        phones = value.split()
    elif isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        phones = [p.strip() for p in value]
    else:
        return None
    return phones if phones and all(phones) else None


def convert_entry(utt_id: str, entry: Any, where: str, problems: list[str]
                  ) -> tuple[str, dict[str, float], list[Word]] | None:
    """One scores.json entry -> (text, sentence scores, words); None when it has problems.

    ``where`` names the source (e.g. ``resource/scores.json: utterance 000010011``); each problem
    appended reads ``WHERE: FIELD: what is wrong; the fix``.
    """
    before = len(problems)
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected an object of labels, got {type(entry).__name__}")
        return None
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: text: missing or empty; give the prompt text, e.g. 'WE CALL IT BEAR'")
        text = None
    scores: dict[str, float] = {}
    for source, aspect in SENTENCE_FIELDS.items():
        value = _number(entry.get(source), f"{where}: {source}", 0.0, 10.0, problems)
        if value is not None:
            scores[aspect] = round_score(value)
    words_in = entry.get("words")
    words: list[Word] = []
    if not isinstance(words_in, list) or not words_in:
        problems.append(f"{where}: words: missing or empty list; each word needs text, accuracy, "
                        "stress, total, phones and phones-accuracy")
        return None
    for i, w in enumerate(words_in):
        if not isinstance(w, dict):
            problems.append(f"{where}: words[{i}]: expected an object, got {type(w).__name__}")
            continue
        wtext = w.get("text")
        label = f"{where}: words[{i}]" + (f" ({wtext})" if isinstance(wtext, str) else "")
        if not isinstance(wtext, str) or not wtext.strip():
            problems.append(f"{label}.text: missing or empty; give the word")
            continue
        wscores: dict[str, float] = {}
        for aspect in WORD_FIELDS:
            value = _number(w.get(aspect), f"{label}.{aspect}", 0.0, 10.0, problems)
            if value is None:
                continue
            if aspect == "stress" and value not in (5, 10):
                problems.append(f"{label}.stress: stress score {value:g} must be 5 or 10; correct it")
                continue
            wscores[aspect] = round_score(value)
        phones = _phones(w.get("phones"))
        if phones is None:
            problems.append(f"{label}.phones: expected a non-empty list of phones or a space-separated "
                            f"string, got {w.get('phones')!r}; give the canonical phones, e.g. 'B EH0 R'")
            continue
        raw = w.get("phones-accuracy")
        if not isinstance(raw, list):
            problems.append(f"{label}.phones-accuracy: expected a list of 0-2 scores, one per phone, "
                            f"got {raw!r}")
            continue
        if len(raw) != len(phones):
            problems.append(f"{label}.phones-accuracy: {len(raw)} scores for {len(phones)} phones "
                            f"({' '.join(phones)}); give exactly one score per phone")
            continue
        phone_scores = []
        for j, value in enumerate(raw):
            value = _number(value, f"{label}.phones-accuracy[{j}] ({phones[j]})", *PHONE_RANGE,
                            problems, what="phone score")
            phone_scores.append(None if value is None else round_score(value * PHONE_SCALE))
        words.append(Word(text=wtext.strip(), phones=phones, scores=wscores, phone_scores=phone_scores))
    if text is not None and len(text.split()) != len(words_in):
        problems.append(f"{where}: words: {len(words_in)} words but text {text!r} has "
                        f"{len(text.split())}; make the word list match the text")
    if len(problems) > before or text is None:
        return None
    return " ".join(text.split()), scores, words


# --------------------------------------------------------------------------- official layout


def _audio_field(audio_path: Path, out_dir: Path | None) -> str:
    """The manifest's audio path: relative to the manifest's folder when there is one."""
    if out_dir is None:
        return str(audio_path)
    try:
        return os.path.relpath(audio_path, out_dir)
    except ValueError:  # another drive (Windows): no relative path exists
        return str(audio_path)


def _speaker_info(speaker: str, spk2age: dict | None, spk2gender: dict | None, split_dir: Path,
                  where: str, problems: list[str]) -> dict[str, Any] | None:
    info: dict[str, Any] = {}
    if spk2age is not None:
        if speaker not in spk2age:
            problems.append(f"{split_dir / 'spk2age'}: speaker {speaker!r} ({where}) has no age; "
                            f"add a line '{speaker} AGE'")
        else:
            value, lineno = spk2age[speaker]
            try:
                info["age"] = int(value)
            except ValueError:
                problems.append(f"{split_dir / 'spk2age'}:{lineno}: age {value!r} of speaker {speaker!r} "
                                "is not a whole number; write the age in years")
    if spk2gender is not None:
        if speaker not in spk2gender:
            problems.append(f"{split_dir / 'spk2gender'}: speaker {speaker!r} ({where}) has no gender; "
                            f"add a line '{speaker} m' or '{speaker} f'")
        else:
            info["gender"] = spk2gender[speaker][0]
    return info or None


def read_so762_split(root: str | os.PathLike, split: str, out_dir: str | os.PathLike | None = None,
                     check_audio: bool = True) -> list[Utterance]:
    """One split (``train`` or ``test``) of the official layout, as Utterances sorted by id.

    Raises CorpusProblems listing every problem found. With ``check_audio`` every clip is
    opened and its duration recorded; without it, durations are None and only the labels and
    Kaldi files are checked. Audio paths are relative to ``out_dir`` when given.
    """
    problems: list[str] = []
    scores = load_scores_json(Path(root).resolve() / "resource" / "scores.json", problems)
    utterances = _read_split(Path(root), split, out_dir, check_audio, scores, problems)
    if problems:
        raise CorpusProblems(problems)
    return utterances


def _read_split(root: Path, split: str, out_dir: str | os.PathLike | None, check_audio: bool,
                scores: dict[str, Any] | None, problems: list[str]) -> list[Utterance]:
    """One split; problems are appended, not raised. ``scores`` None: scores.json is unusable
    (already reported), so only the Kaldi files and the audio are checked."""
    root = root.resolve()
    out = Path(out_dir).resolve() if out_dir is not None else None
    split_dir = root / split
    scores_path = root / "resource" / "scores.json"
    wav_scp = split_dir / "wav.scp"
    wavs = read_kaldi_map(wav_scp, problems)
    utt2spk = read_kaldi_map(split_dir / "utt2spk", problems)
    texts = read_kaldi_map(split_dir / "text", problems, required=False)
    spk2age = read_kaldi_map(split_dir / "spk2age", problems, required=False)
    spk2gender = read_kaldi_map(split_dir / "spk2gender", problems, required=False)
    utterances: list[Utterance] = []
    speaker_infos: dict[str, dict[str, Any] | None] = {}
    if wavs is None:
        return utterances
    if not wavs:
        problems.append(f"{wav_scp}: no utterances; list one 'ID PATH' line per clip")
    for utt_id in sorted(wavs):
        before = len(problems)
        value, lineno = wavs[utt_id]
        where = f"{wav_scp}:{lineno}"
        duration = None
        if value.endswith("|"):
            problems.append(f"{where}: audio: piped commands are not supported ({value!r}); "
                            "convert the audio to files and list their paths")
            audio_path = None
        else:
            audio_path = Path(value) if Path(value).is_absolute() else root / value
        if audio_path is not None and check_audio:
            if not audio_path.is_file():
                problems.append(f"{where}: audio: file {audio_path} of utterance {utt_id} does not exist; "
                                f"restore it, or fix the path on line {lineno}")
            else:
                try:
                    seconds, _ = audio_info(audio_path)
                except AudioError as e:
                    problems.append(f"{where}: audio: utterance {utt_id}: {e}")
                else:
                    duration = round(seconds, 4)
                    if seconds > MAX_SECONDS:
                        problems.append(f"{where}: audio: {audio_path} is {seconds:.1f} s long; the model "
                                        f"hears at most {MAX_SECONDS:.0f} s: cut it or leave it out")
        speaker = None
        if utt2spk is not None:
            if utt_id not in utt2spk:
                problems.append(f"{split_dir / 'utt2spk'}: utterance {utt_id} (wav.scp line {lineno}) "
                                f"is missing; add a line '{utt_id} SPEAKER'")
            else:
                speaker = utt2spk[utt_id][0]
        info = None
        if speaker is not None:
            if speaker not in speaker_infos:  # each speaker's problems once, not once per utterance
                speaker_infos[speaker] = _speaker_info(speaker, spk2age, spk2gender, split_dir,
                                                       f"utterance {utt_id}", problems)
            info = speaker_infos[speaker]
        converted = None
        if scores is not None:
            if utt_id not in scores:
                problems.append(f"{where}: utterance {utt_id} has no entry in {scores_path}; "
                                f"add its labels, or remove line {lineno} from wav.scp")
            else:
                converted = convert_entry(utt_id, scores[utt_id], f"{scores_path}: utterance {utt_id}",
                                          problems)
        if converted is not None and texts is not None:
            if utt_id not in texts:
                problems.append(f"{split_dir / 'text'}: utterance {utt_id} (wav.scp line {lineno}) is "
                                f"missing; add a line '{utt_id} {converted[0]}'")
            elif " ".join(texts[utt_id][0].split()) != converted[0]:
                problems.append(f"{split_dir / 'text'}:{texts[utt_id][1]}: text {texts[utt_id][0]!r} of "
                                f"utterance {utt_id} differs from scores.json ({converted[0]!r}); "
                                "make them the same")
        if len(problems) > before or converted is None or audio_path is None:
            continue
        text, sentence_scores, words = converted
        utt = Utterance(id=str(utt_id), audio=_audio_field(audio_path, out), text=text, words=words,
                        speaker=speaker, speaker_info=info, duration=duration, scores=sentence_scores,
                        base_dir=out)
        # Safety net: the record must pass the manifest schema that read_manifest applies.
        problems += [f"{where}: utterance {utt_id}: manifest record: {p}" for p in record_problems(utt.to_dict())]
        if len(problems) == before:
            utterances.append(utt)
    return utterances


def read_so762(root: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               check_audio: bool = True) -> dict[str, list[Utterance]]:
    """Both splits of the official layout: {"train": [...], "test": [...]}, each sorted by id.

    Raises CorpusProblems listing every problem of both splits. Audio paths are relative to
    ``out_dir`` (the manifests' folder) when given, absolute otherwise.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise ApaError(f"--root {root} is not a folder; pass the speechocean762 folder that holds "
                       "train/, test/, WAVE/ and resource/scores.json")
    problems: list[str] = []
    scores = load_scores_json(root_path.resolve() / "resource" / "scores.json", problems)
    splits = {split: _read_split(root_path, split, out_dir, check_audio, scores, problems)
              for split in SPLITS}
    if not problems:
        train_ids = {u.id for u in splits["train"]}
        for utt in splits["test"]:
            if utt.id in train_ids:
                problems.append(f"{root_path.resolve() / 'test' / 'wav.scp'}: utterance {utt.id} is in "
                                "both train and test; remove it from one split")
    if problems:
        raise CorpusProblems(problems)
    return splits


# --------------------------------------------------------------------------- reports and writing


def summarize(split: str, utterances: list[Utterance]) -> str:
    """One line: counts, and durations (total hours, mean, max) when they were measured."""
    speakers = {u.speaker for u in utterances if u.speaker is not None}
    n_words = sum(len(u.words) for u in utterances)
    n_phones = sum(len(w.phones) for u in utterances for w in u.words)
    line = (f"{split}: {len(utterances):,} utterances, {len(speakers):,} speakers, {n_words:,} words, "
            f"{n_phones:,} phones")
    durations = [u.duration for u in utterances if u.duration is not None]
    if durations:
        total = sum(durations)
        line += (f"; audio {len(durations):,} clips, {total / 3600:.2f} h, mean {total / len(durations):.2f} s, "
                 f"max {max(durations):.2f} s")
    else:
        line += "; durations not measured (audio not checked)"
    return line


def manifest_path(out_dir: str | os.PathLike, split: str) -> Path:
    return Path(out_dir) / f"so762_{split}.jsonl"


def write_splits(out_dir: str | os.PathLike, splits: dict[str, list[Utterance]],
                 log: Log = print) -> dict[str, Path]:
    paths = {}
    for split, utterances in splits.items():
        path = manifest_path(out_dir, split)
        write_manifest(path, sorted(utterances, key=lambda u: u.id))
        log(summarize(split, utterances))
        log(f"wrote {path}")
        paths[split] = path
    return paths


def prepare_so762(root: str | os.PathLike, out_dir: str | os.PathLike, check_audio: bool = True,
                  log: Log = print) -> dict[str, Path]:
    """Official layout at ``root`` -> OUT/so762_train.jsonl and OUT/so762_test.jsonl."""
    splits = read_so762(root, out_dir, check_audio=check_audio)
    return write_splits(out_dir, splits, log)


# --------------------------------------------------------------------------- Hugging Face copy


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

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        sf.write(str(tmp), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise ApaError(f"cannot write {path}: {e}; free disk space or choose another --out") from None


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
                utt = Utterance(id=utt_id, audio=_audio_field(flac, out), text=text, words=words,
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
