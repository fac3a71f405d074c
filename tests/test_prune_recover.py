"""Recovery after pruning (myllm101/prune/recover.py): full fine-tuning with the masks kept, and
LoRA recovery (adapters trained, merged, re-masked), on tiny LLaMAs and through ``myllm101 prune``:
the saved weights have exactly the zeros pruning made, the loss on the recovery data falls, the
model comes back with its own modules and flags, and bad options are refused by name."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from myllm101 import cli as main_cli
from myllm101.config import LlamaConfig
from myllm101.fast.llama import Llama
from myllm101.fast.prune import sparsity_of
from myllm101.finetune.adapters import lora_modules
from myllm101.prune import block_linears, prune_structured, prune_unstructured
from myllm101.prune.recover import mean_loss, recover, recover_lora
from myllm101.train.checkpoint import load_model
from tests.test_prune_cli import prune_args
from tests.test_quant_cli import setup  # noqa: F401 (fixture: model + corpus dirs)

CFG = LlamaConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                  intermediate_size=48)  # fmt: skip


def _batches(n: int = 4, seed: int = 1) -> list[torch.Tensor]:
    """Ids with structure to learn (a repeating ramp with a random offset per row)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start = torch.randint(0, CFG.vocab_size, (2, 1), generator=g)
        out.append((start + torch.arange(16)) % CFG.vocab_size)  # (2, 16)
    return out


torch.manual_seed(0)
BASE = Llama(CFG).eval()
BATCHES = _batches()


def _zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach() == 0 for n in block_linears(model)}


@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_lora_recovery_keeps_exactly_the_pruned_zeros_and_lowers_the_loss(sparsity):
    model = copy.deepcopy(BASE)
    masks = prune_unstructured(model, "magnitude", sparsity)
    before = mean_loss(model, BATCHES)
    r = recover_lora(model, BATCHES, steps=30, lr=1e-2, masks=masks, r=4, progress=False,
                     eval_batches=BATCHES)  # fmt: skip
    assert len(r.losses) == 30
    zeros = _zeros(model)
    for name, keep in masks.items():  # zero exactly where pruned (a kept weight 0 by chance: no)
        assert torch.equal(zeros[name], ~keep), name
    assert sparsity_of(model, block_linears(model)) == sparsity
    after = mean_loss(model, BATCHES)
    assert after < before, (before, after)
    # re-masking dropped part of the trained update: it is measured, and it is what the model had
    assert r.loss_unmasked is not None and r.loss_unmasked != after


def test_lora_recovery_returns_the_models_own_modules_and_flags():
    model = copy.deepcopy(BASE)
    masks = prune_unstructured(model, "magnitude", 0.5)
    model.layers[0].mlp.up_proj.weight.requires_grad_(False)  # one frozen weight stays frozen
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    keys = set(model.state_dict())
    recover_lora(model, BATCHES, steps=2, masks=masks, r=2, progress=False)
    assert set(model.state_dict()) == keys  # no lora_A / lora_B left, same names
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for name in block_linears(model):
        assert type(model.get_submodule(name)) is nn.Linear, name
    assert not hasattr(model, "lora_base_identity") and not model.training


def test_lora_recovery_of_a_structured_model_needs_no_masks():
    model = copy.deepcopy(BASE)
    prune_structured(model, heads=0.5, neurons=0.25, calib_batches=BATCHES)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    before = mean_loss(model, BATCHES)
    r = recover_lora(model, BATCHES, steps=30, lr=1e-2, r=4, progress=False)
    assert r.loss_unmasked is None  # nothing to re-mask
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    assert mean_loss(model, BATCHES) < before


def test_full_recovery_keeps_the_zeros_and_lowers_the_loss():
    model = copy.deepcopy(BASE)
    masks = prune_unstructured(model, "magnitude", 0.5)
    before = mean_loss(model, BATCHES)
    losses = recover(model, BATCHES, steps=20, lr=3e-3, masks=masks, progress=False)
    assert len(losses) == 20 and mean_loss(model, BATCHES) < before
    zeros = _zeros(model)
    assert all(torch.equal(zeros[n], ~keep) for n, keep in masks.items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, r"steps: expected an int >= 1, got 0"),
        ({"lr": float("nan")}, r"lr: expected a finite float > 0, got nan"),
        ({"r": 0}, r"r: expected an int >= 1, got 0"),
        ({"batches": []}, r"batches: expected at least one batch"),
    ],
)
def test_lora_recovery_bad_input(kwargs, message):
    model = copy.deepcopy(BASE)
    args = {"batches": BATCHES, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        recover_lora(model, progress=False, **args)
    assert not lora_modules(model)  # refused before any layer was wrapped


def test_cli_lora_recovery_saves_the_pruned_zeros_and_records_losses(setup, capsys):  # noqa: F811
    root, data = setup
    plain, rec = root / "p-mag", root / "p-mag-lora"
    common = ("--method", "magnitude", "--sparsity", "0.5")
    assert main_cli.main(prune_args(root, data, plain, *common)) == 0
    assert main_cli.main(prune_args(root, data, rec, *common, "--recover-steps", "12",
                                    "--recover-method", "lora", "--recover-lr", "1e-2",
                                    "--recover-rank", "4")) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "recovery (lora): 12 steps" in said and "before re-masking" in said
    pruned, _, _ = load_model(plain)
    recovered, _, _ = load_model(rec)
    zp, zr = _zeros(pruned), _zeros(recovered)
    assert all(torch.equal(zp[n], zr[n]) for n in zp)  # exactly the zeros pruning made
    assert sparsity_of(recovered, block_linears(recovered)) == 0.5
    r = json.loads((rec / "config.json").read_text())["pruning"]["recovery"]
    assert r["method"] == "lora" and r["rank"] == 4 and r["steps"] == 12 and r["lr"] == 1e-2
    assert r["loss_after"] < r["loss_before"]  # on the recovery batches, of the saved model


def test_cli_recovery_options_are_checked(setup, capsys):  # noqa: F811
    root, data = setup
    for more, message in [
        (("--recover-rank", "0"), "--recover-rank: expected an int >= 1, got 0"),
        (("--recover-lr", "-1"), "--recover-lr: expected a float > 0, got -1.0"),
    ]:
        args = prune_args(root, data, root / "bad-rec", "--method", "magnitude", "--sparsity",
                          "0.5", "--recover-steps", "2", *more)  # fmt: skip
        assert main_cli.main(args) == 2
        assert message in capsys.readouterr().err
    assert not (root / "bad-rec").exists()


def test_lora_recovery_of_a_gpt_keeps_the_zeros_and_its_biases():
    from myllm101.config import GPTConfig
    from myllm101.fast.gpt import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    masks = prune_unstructured(model, "magnitude", 0.5)
    biases = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")}
    before = mean_loss(model, BATCHES)
    recover_lora(model, BATCHES, steps=20, lr=1e-2, masks=masks, r=2, progress=False)
    zeros = _zeros(model)
    assert all(torch.equal(zeros[n], ~keep) for n, keep in masks.items())
    assert all(torch.equal(p, biases[n]) for n, p in model.named_parameters() if n in biases)
    assert mean_loss(model, BATCHES) < before
