"""Every backbone, the same checks, with its tiny offline model (apa.backbones).

For each family: the tiny model reloads through the one loader and renders the checkpoint's
chat template; the economical forward equals the stock forward; a clip shared by a preference
pair is encoded once with the same result; LoRA lands on the language model only and trains;
constrained decoding (parallel and sequential) equals a brute-force computation and, on an
overfit model, free greedy decoding; real speechocean762 clips decode to the template; and
`apa score` and `apa serve` answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from apa.backbones import BACKBONES, backbone_class
from apa.cli import main
from apa.collate import build_training_batch, load_audios
from apa.forward import response_logps
from apa.inference.decoding import decode_batch
from apa.prompts import instruction
from apa.targets import ScoreSet, parse_scores, reference_scores
from apa.tasks import TASKS
from decoding_checks import brute_force, overfit, slot_values

NAMES = list(BACKBONES)
SO762 = Path(__file__).resolve().parents[2] / "shared" / "so762"


@pytest.fixture(scope="session")
def backbone_dirs(tmp_path_factory):
    """name -> folder of that backbone's tiny model (built once per session, on first use)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = backbone_class(name).build_tiny(tmp_path_factory.mktemp(name), seed=0)
        return built[name]

    return get


def load(path, dtype="float32"):
    from apa.backbones.loading import load_model_and_processor

    return load_model_and_processor(path, dtype=dtype, device="cpu")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_loads_by_its_model_type_and_renders_the_real_template(name, backbone_dirs, utterances):
    from transformers.utils.chat_template_utils import render_jinja_template

    cls = backbone_class(name)
    model, processor = load(backbone_dirs(name))
    assert type(processor) is cls
    config = json.loads((backbone_dirs(name) / "config.json").read_text())
    assert config["model_type"] in cls.model_types
    text = processor.render(instruction(TASKS["multi"], utterances[0]))
    rendered, _ = render_jinja_template(conversations=[cls.messages(instruction(TASKS["multi"], utterances[0]))],
                                        chat_template=processor.tokenizer.chat_template or cls.chat_template,
                                        add_generation_prompt=True)
    assert text == rendered[0] and text.count(cls.audio_token) == 1
    assert processor.tokenizer.chat_template in (None, cls.chat_template)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_responses_split_where_the_real_tokenizer_splits_them(name, backbone_dirs, utterances):
    """The template's tokens are the concatenation of its stretches' and values' tokens (the
    constrained decoders' assumption), for every value in every kind of slot."""
    from apa.inference.slots import TemplateTokens
    from apa.targets import format_scores

    _, processor = load(backbone_dirs(name))
    tokens = TemplateTokens(processor.tokenizer, processor.end_of_turn_id)
    utt = utterances[0]
    for task in TASKS.values():
        plan = tokens.plan(utt, task)
        for value in range(11):
            values = [value if value in trie.tokens else 10 for trie in plan.tries]
            tokens.check(task, plan, values)
        text = format_scores(utt, task, reference_scores(utt))
        assert processor.tokenizer.decode(tokens.tokenize(text)) == text


@pytest.mark.parametrize("name", NAMES)
def test_the_economical_forward_equals_the_stock_forward(name, backbone_dirs, utterances):
    """In float64, so that the comparison is of the arithmetic: the same sums in another order
    differ by ~1e-16 relative; 1e-9 on a sum of ~100 token log-likelihoods is far above that
    and far below any mistake (a shifted label, a missing audio token, a wrong position)."""
    model, processor = load(backbone_dirs(name), dtype="float64")
    task = TASKS["multi"]
    batch = build_training_batch(processor, utterances, task, audios=load_audios(utterances))
    with torch.no_grad():
        ours = response_logps(model, processor, batch)
        inputs = processor.generate_inputs({k: v for k, v in batch.items() if k != "labels"})
        stock = model(**inputs).logits.double()
    logp = torch.log_softmax(stock[:, :-1], dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    expected = (logp.gather(2, labels.clamp(min=0)[..., None])[..., 0] * mask).sum(1)
    assert torch.allclose(ours.sum_logp.double(), expected, rtol=0, atol=1e-9)
    assert ours.n_tokens.tolist() == mask.sum(1).tolist()


@pytest.mark.parametrize("name", NAMES)
def test_a_pair_encodes_its_clip_once_with_the_same_result(name, backbone_dirs, utterances):
    model, processor = load(backbone_dirs(name), dtype="float64")
    task = TASKS["sentence_total"]
    chosen, rejected = ["Sentence Scores: 8", "Sentence Scores: 6"], ["Sentence Scores: 4", "Sentence Scores: 9"]
    pair = build_training_batch(processor, utterances[:2], task, targets=chosen, rejected_targets=rejected)
    assert pair["clip_of_row"].tolist() == [0, 1, 0, 1]
    separate = build_training_batch(processor, utterances[:2] * 2, task, targets=chosen + rejected)
    with torch.no_grad():
        shared = response_logps(model, processor, {k: v for k, v in pair.items() if k != "clip_of_row"},
                                pair["clip_of_row"])
        alone = response_logps(model, processor, separate)
    assert torch.allclose(shared.sum_logp, alone.sum_logp, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_lora_lands_on_the_language_model_only(name, backbone_dirs):
    from apa.backbones.base import module_path
    from apa.backbones.lora import add_lora

    model, processor = load(backbone_dirs(name))
    text_path = module_path(model, processor.text_model(model))
    peft_model = add_lora(model, processor, r=4, alpha=8)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_modules() if n.endswith("lora_A")}
    assert adapted and all(re.search(rf"(^|\.){re.escape(text_path)}\.", n) for n in adapted)
    assert {n.rsplit(".", 1)[1] for n in adapted} == set(processor.lora_targets)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("name", NAMES)
def test_sft_loss_falls_and_only_lora_weights_change(name, backbone_dirs, corpus_manifest, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(["train", "--no-progress", f"model={backbone_dirs(name)}", f"train={corpus_manifest}",
                 f"output_dir={out}", "task=sentence_total", "batch_size=2", "grad_accum=1", "lr=1e-2",
                 "warmup_ratio=0", "epochs=6", "save_every=0"]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    from apa.backbones.loading import load_model_and_processor

    base, _ = load(backbone_dirs(name))
    tuned, _ = load_model_and_processor(backbone_dirs(name), adapter=out / "adapter", dtype="float32", device="cpu")
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in tuned.state_dict().items() if "lora_" not in k}
    for key, value in base.state_dict().items():
        assert torch.equal(value, frozen[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_constrained_decoding_equals_brute_force_in_both_algorithms(name, backbone_dirs, utterances):
    """Values exactly, expected scores to 1e-5 (float32 logits computed in two layouts)."""
    model, processor = load(backbone_dirs(name))
    utt, task = utterances[1], TASKS["multi"]
    values, expected = brute_force(model, processor, utt, task)
    for mode in ("constrained", "constrained-sequential"):
        result = decode_batch(model, processor, [utt], task, decoding=mode)[0]
        parsed = parse_scores(result["output"], utt, task)
        assert parsed.problems == [] and slot_values(parsed.scores, utt, task) == values, mode
        ours = slot_values(ScoreSet.from_dict(result["expected"]), utt, task)
        assert ours == pytest.approx(expected, abs=1e-5), mode


@pytest.mark.parametrize("name", NAMES)
def test_on_an_overfit_model_constrained_equals_free_greedy(name, backbone_dirs, utterances):
    model, processor = load(backbone_dirs(name))
    chosen, task = utterances[:2], TASKS["word_sentence"]
    overfit(model, processor, chosen, task)
    free = decode_batch(model, processor, chosen, task, decoding="free")
    parallel = decode_batch(model, processor, chosen, task, decoding="constrained")
    sequential = decode_batch(model, processor, chosen, task, decoding="constrained-sequential")
    for utt, f, p, s in zip(chosen, free, parallel, sequential):
        assert parse_scores(f["output"], utt, task).problems == []
        assert f["output"] == p["output"] == s["output"]


@pytest.mark.parametrize("name", NAMES)
def test_real_so762_clips_decode_to_the_template(name, backbone_dirs):
    if not (SO762 / "resource" / "scores.json").is_file():
        pytest.skip(f"speechocean762 is not at {SO762}")
    from apa.data.so762 import read_so762_split

    utts = read_so762_split(SO762, "test", check_audio=False)[:8]
    model, processor = load(backbone_dirs(name))
    for task in (TASKS["multi"], TASKS["word_sentence"]):
        for utt, result in zip(utts, decode_batch(model, processor, utts, task, decoding="constrained")):
            assert parse_scores(result["output"], utt, task).problems == []


@pytest.mark.parametrize("name", NAMES)
def test_score_and_serve_answer(name, backbone_dirs, utterances, capsys):
    from fastapi.testclient import TestClient

    from apa.serve.app import create_app

    path = str(utterances[0].audio_path)
    assert main(["score", "--model", str(backbone_dirs(name)), "--audio", path, "--text", utterances[0].text,
                 "--device", "cpu", "--compact"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [w["word"] for w in result["words"]] == utterances[0].text.split()
    model, processor = load(backbone_dirs(name))
    with TestClient(create_app(model, processor)) as client:
        with open(path, "rb") as f:
            response = client.post("/score", files={"audio": ("a.wav", f, "audio/wav")},
                                   data={"text": utterances[0].text})
    assert response.status_code == 200, response.text
    assert response.json()["sentence"]["total"]["score"] is not None


# Parameters of each release as loaded (billions, README's backbone table): Qwen2-Audio 8.40B,
# the Omni thinker 8.93B (the 10.7B release less its talker and token2wav), Phi-4-multimodal
# 4.74B with its 0.46B speech LoRA merged in place, Granite-Speech 3.3 2B 3.01B.
RELEASE_BILLIONS = {"qwen2-audio": 8.40, "qwen2.5-omni": 8.93, "phi4-mm": 4.74, "granite-speech": 3.01}
# LoRA r=8 on the language model's seven projections (README): r x (in + out) per layer matched.
LORA_R8 = {"qwen2-audio": 19_988_480, "qwen2.5-omni": 20_185_088, "phi4-mm": 11_534_336,
           "granite-speech": 14_090_240}


@pytest.mark.parametrize("name", NAMES)
def test_the_real_shape_has_the_release_parameter_count(name):
    """The benchmarks' real-shape model (built on the meta device: no memory) has the release's
    size, and with ``layers`` its text model keeps that many layers."""
    cls = backbone_class(name)
    _, processor = cls.make_tiny()
    model = cls.real_shape_model(processor, None, "meta", torch.bfloat16)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == RELEASE_BILLIONS[name]
    assert model.get_output_embeddings().weight.shape[0] >= len(processor.tokenizer)
    targets = re.compile(processor.lora_target_regex(model))
    assert sum(8 * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and targets.fullmatch(n)) == LORA_R8[name]
    short = cls.real_shape_model(processor, 1, "meta", torch.bfloat16)
    assert len(processor.text_model(short).layers) == 1


@pytest.mark.parametrize("name", NAMES)
def test_every_command_runs_with_the_backbone(name, corpus_manifest, tmp_path):
    """tiny-model -> train (simpo, dpo: the preference objectives; sft is tested above) ->
    predict (constrained, free) -> evaluate, through the CLI, on the 4-clip corpus."""
    root = Path(__file__).resolve().parents[1]
    model = tmp_path / "model"
    assert main(["tiny-model", str(model), "--backbone", name]) == 0
    for method in ("simpo", "dpo"):
        out = tmp_path / method
        assert main(["train", "--config", str(root / "configs" / f"smoke_{method}.yaml"), "--no-progress",
                     f"model={model}", f"train={corpus_manifest}", f"output_dir={out}", "task=word_sentence",
                     "epochs=1", "batch_size=2", "grad_accum=1", "save_every=0"]) == 0
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
    for decoding in ("constrained", "free"):
        pred = tmp_path / f"{decoding}.jsonl"
        assert main(["predict", "--model", str(model), "--adapter", str(tmp_path / "dpo" / "adapter"),
                     "--data", str(corpus_manifest), "--task", "word_sentence", "--out", str(pred),
                     "--decoding", decoding, "--device", "cpu", "--no-progress"]) == 0
        assert len(pred.read_text().splitlines()) == 4
        assert main(["evaluate", "--pred", str(pred), "--ref", str(corpus_manifest), "--task", "word_sentence",
                     "--out", str(tmp_path / f"eval_{decoding}"), "--bootstrap", "0", "--no-plots"]) == 0
        metrics = json.loads((tmp_path / f"eval_{decoding}" / "metrics.json").read_text())
        assert metrics["n_utterances"] == 4
