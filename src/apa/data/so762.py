"""speechocean762 (SO762) in its official release layout -> manifests (the Hugging Face copy:
apa.data.so762_hub).

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

from apa.data.audio import AudioError, audio_info
from apa.data.manifest import Utterance, Word, record_problems, round_score, write_manifest
from apa.data.kaldi import read_kaldi_map
from apa.errors import ApaError, problem_list

SPLITS = ("train", "test")
# scores.json field -> manifest aspect, in the manifest's canonical order (apa.tasks.ASPECTS).
SENTENCE_FIELDS = {"accuracy": "accuracy", "fluency": "fluency", "prosodic": "prosody",
                   "completeness": "completeness", "total": "total"}
WORD_FIELDS = ("accuracy", "stress", "total")
PHONE_RANGE = (0.0, 2.0)  # SO762 phone scores: mean of five experts on 0-2, in steps of 0.2
PHONE_SCALE = 5  # x5 puts them on the 0-10 scale of every other score

Log = Callable[[str], None]


class CorpusProblems(ApaError):
    """Every problem found while reading a corpus, one line each; nothing was written."""

    def __init__(self, problems: list[str], what: str = "speechocean762"):
        self.problems = problems
        if len(problems) == 1:
            message = f"{problems[0]} (nothing was written)"
        else:
            message = f"{len(problems)} problems in {what}; nothing was written:\n{problem_list(problems)}"
        super().__init__(message)


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


def audio_field(audio_path: Path, out_dir: Path | None) -> str:
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
        utt = Utterance(id=str(utt_id), audio=audio_field(audio_path, out), text=text, words=words,
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
