"""``myllm101 export`` (api/cli.py) and ``generate_any`` (generate --model NAME|DIR)."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from myllm101.api import AutoModelForCausalLM, pipeline
from myllm101.api.cli import generate_any, run
from myllm101.config import GPTConfig
from tests.train_helpers import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from myllm101.fast.bpe import Tokenizer, bpe_train

    tok = bpe_train("to be or not to be, that is the question. " * 30, 300)
    tok = Tokenizer(tok.mergeable_ranks, tok.pattern, {"<|endoftext|>": len(tok.mergeable_ranks)})
    d = tmp_path_factory.mktemp("cli") / "gpt"
    cfg = GPTConfig(vocab_size=tok.n_vocab, block_size=32, n_layer=1, n_head=2, n_embd=16)
    model = AutoModelForCausalLM.from_config(cfg, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    model.save_pretrained(d, tokenizer=tok)
    return d


def test_export_to_hf_loads_in_transformers(tmp_path, model_dir, capsys):
    transformers = pytest.importorskip("transformers")
    assert run(["export", "--model", str(model_dir), "--out", str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, rtol=1e-5, atol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("to be or")["input_ids"] == pipeline(
        "text-generation", model=model_dir
    ).tokenizer.encode("to be or")


def test_export_refuses_existing_out_and_bad_input(tmp_path, model_dir, capsys):
    (tmp_path / "taken").mkdir()
    assert run(["export", "--model", str(model_dir), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert run(["export", "--model", str(model_dir), "--out", str(model_dir), "--overwrite"]) == 2
    assert "is the input model's directory" in capsys.readouterr().err
    assert (
        run(["export", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--task", "cls"])
        == 2
    )
    assert "model_type 'gpt' has no sequence-classification model" in capsys.readouterr().err
    assert run(["export", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert "(no such directory)" in capsys.readouterr().err


def test_export_to_our_format_round_trips(tmp_path, model_dir):
    assert (
        run(
            [
                "export",
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "ours"),
                "--format",
                "myllm101",
            ]
        )
        == 0
    )
    a, b = (
        AutoModelForCausalLM.from_pretrained(model_dir),
        AutoModelForCausalLM.from_pretrained(tmp_path / "ours"),
    )
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def generate_args(model, prompt, **kw) -> argparse.Namespace:
    base = dict(model=str(model), prompt=prompt, chat=False, max_new_tokens=8, temperature=0.0,
                seed=None, dtype="fp32", adapter=None)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_generate_any_on_a_directory(model_dir, capsys):
    assert generate_any(generate_args(model_dir, "to be")) == 0
    want = pipeline("text-generation", model=model_dir)(
        "to be", max_new_tokens=8, return_full_text=False
    )
    out = capsys.readouterr()
    assert out.out == want[0]["generated_text"] + "\n"
    # the generation's clock on stderr: the prefill apart from the decode steps (fast/timings.py)
    assert re.search(r"prompt \d+ tokens: first new token after [\d.]+ s; \d+ new tokens", out.err)
    with pytest.raises(ValueError, match="--max-new-tokens: expected >= 0, got -1"):
        generate_any(generate_args(model_dir, "to be", max_new_tokens=-1))
    with pytest.raises(ValueError, match="--chat: expected a model with a chat template"):
        generate_any(generate_args(model_dir, "to be", chat=True))
    with pytest.raises(ValueError, match="--adapter: for --model smollm2 only"):
        generate_any(generate_args(model_dir, "to be", adapter="x"))


def test_generate_compile_prints_the_eager_text(model_dir, capsys, monkeypatch):
    """--compile decodes through fast/compiled_decode.py: the same greedy text (float32)."""
    from myllm101.fast import generate

    assert generate_any(generate_args(model_dir, "to be")) == 0
    eager = capsys.readouterr().out
    monkeypatch.setenv("MYLLM101_COMPILE_AUTOTUNE", "0")  # tests/test_compiled_decode.py autotunes
    compiled = []  # the models generate() asked a compiled decoder for
    real = generate.compiled_decoder
    monkeypatch.setattr(generate, "compiled_decoder", lambda m: compiled.append(m) or real(m))
    assert generate_any(generate_args(model_dir, "to be", compile=True)) == 0
    assert capsys.readouterr().out == eager
    assert len(compiled) == 1


@pytest.mark.slow
def test_the_demo_run_exports_and_transformers_generates_its_tokens(tmp_path, capsys):
    """`make demo`'s pipeline, shortened (its config file, a smaller tokenizer, 200 steps): the
    trained run exports to the HF format and transformers' greedy `generate` gives the tokens
    `myllm101 generate --model RUN` prints."""
    transformers = pytest.importorskip("transformers")
    from pathlib import Path

    from myllm101.cli import main

    train_txt = Path("data/shakespeare/train.txt")
    if not train_txt.is_file():
        pytest.skip("data/shakespeare/train.txt not found: run `make data`")
    sample = tmp_path / "sample.txt"
    sample.write_text(train_txt.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    tok_dir, run_dir, hf_dir = tmp_path / "tok", tmp_path / "run", tmp_path / "hf"
    assert main(["tokenizer", "train", "--input", str(sample), "--vocab-size", "512",
                 "--special", "<|endoftext|>", "--out", str(tok_dir)]) == 0  # fmt: skip
    assert main(["train", "--config", "configs/gpt-shakespeare.json", f"--out_dir={run_dir}",
                 f"--tokenizer={tok_dir}", "--max_steps=200", "--eval_interval=100",
                 "--save_interval=100", "--progress=false", "--sample_tokens=0"]) == 0  # fmt: skip
    assert main(["export", "--model", str(run_dir), "--out", str(hf_dir)]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(run_dir), "ROMEO:", "--max-new-tokens", "20",
                 "--dtype", "fp32"]) == 0  # fmt: skip
    ours = capsys.readouterr().out.rstrip("\n")

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ids = hf_tok("ROMEO:")["input_ids"]
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      max_new_tokens=20, do_sample=False, eos_token_id=None,
                      pad_token_id=0)  # fmt: skip
    theirs = hf_tok.decode(out[0, len(ids) :])
    assert theirs == ours and len(set(out[0, len(ids) :].tolist())) > 1
