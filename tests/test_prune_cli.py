"""``myllm101 prune`` end to end on a tiny LLaMA (every method, recovery, then eval and quantize),
its errors, and one slow run on the real SmolLM2."""

from __future__ import annotations

import json

import pytest
import torch

from myllm101 import cli as main_cli
from myllm101.fast.prune import sparsity_of
from myllm101.prune import block_linears
from myllm101.train.checkpoint import load_model
from tests.test_quant_cli import _eval_args, setup  # noqa: F401 (fixture: model + corpus dirs)


def prune_args(root, data, out, *more) -> list[str]:
    return ["prune", "--model", str(root / "fp32"), "--out", str(out), "--data-dir", str(data),
            "--calibration-windows", "4", "--no-progress", *more]  # fmt: skip


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_unstructured_prune_saves_exact_sparsity_and_evaluates(setup, method, capsys):  # noqa: F811
    root, data = setup
    out = root / f"p-{method}"
    assert main_cli.main(prune_args(root, data, out, "--method", method, "--sparsity", "0.5")) == 0
    said = capsys.readouterr().out
    assert "block Linears: 50.00% zeros" in said
    model, tok, cfg = load_model(out)
    assert tok is not None and sparsity_of(model, block_linears(model)) == 0.5
    entry = json.loads((out / "config.json").read_text())["pruning"]
    assert entry["method"] == method and entry["base"] == str((root / "fp32").resolve())
    assert entry["params_before"] == entry["params_after"]  # zeros: the shapes stay
    # eval compares it with its base and names the method in the scheme column
    assert main_cli.main(_eval_args(data, out)) == 0
    table = capsys.readouterr().out
    assert f"| {method} 0.5 |" in table
    ev = json.loads((out / "eval.json").read_text())
    assert ev["pruning"]["method"] == method
    row = ev["perplexity"]["shakespeare-test"]
    assert row["ppl_change"] == pytest.approx(row["ppl"] / row["base_ppl"] - 1)


def test_two_four_pattern_and_prune_then_quantize(setup, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MYLLM101_INT8_KERNEL", "dequantize")  # portable on every CPU kind
    root, data = setup
    out = root / "p-24"
    assert main_cli.main(prune_args(root, data, out, "--method", "2:4")) == 0
    model, _, _ = load_model(out)
    modules = dict(model.named_modules())
    for name in block_linears(model):
        groups = modules[name].weight.reshape(-1, 4)
        assert ((groups != 0).sum(-1) <= 2).all(), name  # at most 2 of every 4 kept
    q = root / "p-24-q8"
    assert main_cli.main(["quantize", "--model", str(out), "--scheme", "int8", "--out", str(q),
                          "--data-dir", str(data)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main_cli.main(_eval_args(data, out, q)) == 0
    table = capsys.readouterr().out
    assert "| 2:4 0.5 |" in table and "| int8 |" in table


def test_recovery_keeps_zeros_and_lowers_the_loss(setup, capsys):  # noqa: F811
    root, data = setup
    out = root / "p-rec"
    assert main_cli.main(prune_args(root, data, out, "--method", "magnitude", "--sparsity",
                                    "0.5", "--recover-steps", "12", "--recover-lr",
                                    "3e-3")) == 0  # fmt: skip
    entry = json.loads((out / "config.json").read_text())["pruning"]
    rec = entry["recovery"]
    assert rec["steps"] == 12 and rec["last_loss"] < rec["first_loss"]
    model, _, _ = load_model(out)
    assert sparsity_of(model, block_linears(model)) == 0.5  # the zeros survived training
    assert rec["method"] == "full" and rec["loss_after"] < rec["loss_before"]
    assert "recovery (full): 12 steps" in capsys.readouterr().out


def test_structured_prune_removes_shapes_and_generates(setup, capsys):  # noqa: F811
    root, data = setup
    out = root / "p-struct"
    assert main_cli.main(prune_args(root, data, out, "--method", "neurons", "--sparsity",
                                    "0.25")) == 0  # fmt: skip
    model, tok, cfg = load_model(out)
    assert [layer.mlp.up_proj.weight.shape[0] for layer in model.layers] == [96, 96]
    entry = json.loads((out / "config.json").read_text())["pruning"]
    assert entry["params_after"] < entry["params_before"]
    ids = torch.tensor([tok.encode("To be or not")])
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], 300)


def test_prune_errors(setup, capsys):  # noqa: F811
    root, data = setup
    cases = [
        (("--method", "wanda"), "--sparsity: required for --method wanda"),
        (("--method", "magnitude", "--sparsity", "1.5"), "sparsity"),
        (("--method", "2:4", "--sparsity", "0.3"), "2:4 prunes exactly 0.5"),
        (
            ("--method", "heads", "--sparsity", "0.5", "--scope", "global"),
            "--scope: the structured",
        ),
        (
            ("--method", "magnitude", "--sparsity", "0.5", "--recover-steps", "-1"),
            "--recover-steps",
        ),
    ]
    for more, message in cases:
        assert main_cli.main(prune_args(root, data, root / "bad", *more)) == 2
        assert message in capsys.readouterr().err
    assert not (root / "bad").exists()
    # the output must not overwrite the input or an existing directory without --overwrite
    rc = main_cli.main(["prune", "--model", str(root / "fp32"), "--out", str(root / "fp32"),
                        "--method", "magnitude", "--sparsity", "0.5", "--overwrite"])  # fmt: skip
    assert rc == 2 and "is the input model's directory" in capsys.readouterr().err
    (root / "exists").mkdir()
    assert main_cli.main(prune_args(root, data, root / "exists", "--method", "magnitude",
                                    "--sparsity", "0.5")) == 2  # fmt: skip
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_wanda_half_sparsity_costs_less_than_magnitude():
    """On the real model at 50% unstructured sparsity Wanda's perplexity rises less than
    magnitude's (the issue's target; a property of the methods, not a stored number): 1024
    tokens of the Shakespeare test split, 16 calibration windows of its train split."""
    from pathlib import Path

    from myllm101.prune import prune_unstructured
    from myllm101.quant.eval import load_any, perplexity
    from myllm101.quant.heldout import DATA_DIR, calibration_batches, heldout_texts, text_ids

    if not (Path(DATA_DIR) / "train.txt").is_file():
        pytest.skip(f"the corpus is not in {DATA_DIR} (make data)")
    ppl = {}
    for method in ("dense", "magnitude", "wanda"):
        m = load_any("smollm2")
        if method != "dense":
            calib = calibration_batches(m.tokenizer, m.cfg.vocab_size, 16)
            prune_unstructured(m.model, method, 0.5, calib_batches=calib)
        text = heldout_texts()["shakespeare-test"]
        ids = text_ids(m.tokenizer, text, m.cfg.vocab_size)[:1024]
        with torch.no_grad():
            ppl[method] = perplexity(m.model, ids).ppl
    assert ppl["dense"] < ppl["wanda"] < ppl["magnitude"], ppl
