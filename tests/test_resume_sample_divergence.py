"""No silently wrong results (issue 12, findings 5, 6, 8): ``sample`` beyond the context, a run
that diverged, and a resume from a damaged or mismatched checkpoint.

Each test here fails on the code before the fix: ``sample`` capped --tokens and cut the prompt
without a word, sampled an empty prompt from token 0 and printed nothing for --num-samples 0 (exit
0); lr=1e10 trained to "success" and exported the exploded weights; --resume stopped at a damaged
newest checkpoint instead of using the previous one, accepted a changed lr, reported a changed
model only as missing/unexpected weights, and choked on a torn last line of metrics.jsonl.
(--tokens 0, --temperature -1 and --top-k 0 were already errors, from generate(), without the
flag's name; the harmless-changes test fails before only for want of ``divergence_loss``: it
guards against refusing too much.)
"""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from myllm101.fast.bpe import bpe_train
from myllm101.train import TrainConfig, Trainer
from myllm101.train import checkpoint as ckpt
from myllm101.train.cli import main, sample_text
from myllm101.train.metrics import read_metrics
from myllm101.train.trainer import TrainingDiverged
from tests.train_helpers import TOKENS, config, losses, one_thread  # noqa: F401 (autouse)

TEXT = "To be, or not to be, that is the question.\n\nWhether 'tis nobler in the mind.\n" * 40
EOT = "<|endoftext|>"


# ---- sample ----

BLOCK = 32  # the sampling model's context


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A tiny trained GPT (block_size 32) whose tokenizer has <|endoftext|>."""
    tmp = tmp_path_factory.mktemp("sample")
    tok = bpe_train(TEXT, 300, special_tokens=[EOT])
    toks = np.array(tok.encode(TEXT))
    cfg = config(tmp, model={"preset": "gpt-tiny", "block_size": BLOCK}, max_steps=4,
                 eval_interval=4)  # fmt: skip
    Trainer(cfg, toks, toks, tokenizer=tok).fit()
    model, tok, _ = ckpt.load_model(tmp / "run")
    return tmp / "run", model, tok


def test_sample_beyond_the_context_is_an_error(sample_run, capsys):
    run, model, tok = sample_run
    prompt = "To be, or not to be " * 4
    n = len(tok.encode(prompt))
    assert n + 10 > BLOCK
    with pytest.raises(ValueError, match=rf"prompt \({n} tokens\) \+ --tokens 10 = {n + 10} .*"
                       rf"block_size={BLOCK}.*--truncate left"):  # fmt: skip
        sample_text(model, tok, prompt, 10, 0.8, 50)
    code = main(["sample", "--model", str(run), "To be", "--tokens", "200"])  # was: 31 tokens
    assert code == 2
    assert f"--tokens: expected < the model's context block_size={BLOCK}" in capsys.readouterr().err
    assert main(["sample", "--model", str(run), "To be", "--tokens", str(BLOCK)]) == 2
    # what fits is sampled in full: exactly --tokens new tokens
    from myllm101.fast.generate import generate

    ids = tok.encode("To be")
    out = generate(model, ids, BLOCK - len(ids), temperature=0.8, top_k=50, seed=0)
    text = sample_text(model, tok, "To be", BLOCK - len(ids), 0.8, 50, seed=0)
    assert len(out) == BLOCK and text == tok.decode(out)


def test_truncate_left_warns_with_the_dropped_count(sample_run, capsys):
    run, _, tok = sample_run
    prompt = "Whether 'tis nobler in the mind " * 4
    n = len(tok.encode(prompt))
    dropped = n + 8 - BLOCK
    assert dropped > 0
    code = main(["sample", "--model", str(run), prompt, "--tokens", "8", "--truncate", "left",
                 "--num-samples", "2"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "dropped" in line]
    assert warnings == [
        f"warning: sample: dropped the first {dropped} of the prompt's {n} tokens to fit "
        f"block_size={BLOCK} with --tokens 8"
    ]  # once, not once per sample
    assert captured.out.count("---") == 2


def test_empty_prompt_starts_from_endoftext_or_is_an_error(sample_run, capsys):
    run, model, tok = sample_run
    assert main(["sample", "--model", str(run), "", "--tokens", "6", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "\x00" not in out and not out.startswith(EOT)  # was: token 0, a NUL byte
    from myllm101.fast.generate import generate

    greedy = generate(model, [tok.special_tokens[EOT]], 6, temperature=0)
    assert out.split("\n---\n")[0] == tok.decode(greedy[1:])
    plain = bpe_train(TEXT, 300)  # no special tokens
    with pytest.raises(ValueError, match=f"prompt is empty and the tokenizer has no {EOT}"):
        sample_text(model, plain, "", 4, 0.8, 50)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--num-samples", "0"], "--num-samples: expected >= 1, got 0"),
        (["--tokens", "0"], "--tokens: expected >= 1, got 0"),
        (["--temperature", "-1"], "--temperature: expected >= 0"),
        (["--top-k", "0"], "--top-k: expected >= 1, got 0"),
    ],
)
def test_bad_sample_arguments_are_errors(sample_run, capsys, args, match):
    run, _, _ = sample_run
    assert main(["sample", "--model", str(run), "To be", *args]) == 2  # was 0 (or a crash)
    captured = capsys.readouterr()
    assert match in captured.err and captured.out == ""


def test_train_samples_fit_the_context(tmp_path, capsys):
    """The trainer's own samples: sample_tokens beyond the context are fewer tokens, not an error."""
    from myllm101.tokenizer.formats import save_tokenizer

    for split in ("train", "val"):
        (tmp_path / f"{split}.txt").write_text(TEXT)
    save_tokenizer(bpe_train(TEXT, 300), tmp_path / "tok")
    cfg = {"out_dir": str(tmp_path / "run"), "data_dir": str(tmp_path), "tokenizer": str(tmp_path / "tok"),
           "model": {"preset": "gpt-tiny"}, "seq_len": 16, "batch_size": 4, "max_steps": 2,
           "eval_interval": 2, "eval_batches": 1, "progress": False, "sample_tokens": 100,
           "sample_prompt": "To be", "dtype": "float32", "warmup_steps": 1}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 0
    captured = capsys.readouterr()
    assert "--- samples ---" in captured.out and captured.out.count("\n---\n") == 2
    assert "sampling 14 tokens, not sample_tokens=100" in captured.err  # block 16, prompt 2


# ---- divergence ----


def test_exploding_run_raises_keeps_the_good_best_and_exports_no_exploded_weights(tmp_path):
    cfg = config(tmp_path, eval_interval=2, save_interval=2, keep_last=10, warmup_steps=0)
    t = Trainer(cfg, TOKENS, TOKENS)
    real_step = t.train_step

    def step():  # from step 5 on: lr=1e4, the weights explode (loss ~1e9, still finite)
        if t.step == 4:
            t.scheduler.base_lrs = [1e4] * len(t.scheduler.base_lrs)
            for g in t.optimizer.param_groups:
                g["lr"] = 1e4
        return real_step()

    t.train_step = step
    with pytest.raises(TrainingDiverged, match="training diverged at step 6: training loss .* is "
                       "above divergence_loss=14.1"):  # 2 ln 97 + 5  # fmt: skip
        t.fit()
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["diverged"] is True and summary["stop_reason"].startswith("diverged: ")
    assert summary["steps"] == 6
    # the exploded weights of step 5 were never saved: not as a checkpoint, not as best/
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000002", "step_0000004"]
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] in (2, 4)
    exported = load_file(run / "model.safetensors")
    best = load_file(run / "best" / "model.safetensors")
    assert exported.keys() == best.keys()
    for k, v in exported.items():
        assert torch.equal(v, best[k]) and torch.isfinite(v).all() and v.abs().max() < 100, k
    assert any(r.get("event") == "diverged" for r in read_metrics(run / "metrics.jsonl"))


def test_lr_1e10_from_the_cli_exits_2_and_exports_nothing(tmp_path, capsys):
    from myllm101.tokenizer.formats import save_tokenizer

    for split in ("train", "val"):
        (tmp_path / f"{split}.txt").write_text(TEXT)
    save_tokenizer(bpe_train(TEXT, 300), tmp_path / "tok")
    cfg = {"out_dir": str(tmp_path / "run"), "data_dir": str(tmp_path), "tokenizer": str(tmp_path / "tok"),
           "model": {"preset": "gpt-tiny"}, "seq_len": 16, "batch_size": 4, "max_steps": 6,
           "eval_interval": 3, "eval_batches": 1, "progress": False, "sample_tokens": 5, "dtype": "float32"}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    code = main(["train", "--config", str(tmp_path / "c.json"), "--lr=1e10", "--warmup_steps=0"])
    assert code == 2  # was 0, "done: 6 steps"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged at step")
    assert "nothing exported" in err[0]
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["diverged"] is True
    assert not (run / "model.safetensors").exists() and not (run / "best").exists()
    assert ckpt.list_checkpoints(run) == []


def test_divergence_loss_config():
    assert TrainConfig(divergence_loss=None).divergence_loss is None
    assert TrainConfig.from_dict({"divergence_loss": 30}).divergence_loss == 30
    with pytest.raises(ValueError, match="divergence_loss: expected a finite value > 0 or null"):
        TrainConfig(divergence_loss=-1.0)
    with pytest.raises(ValueError, match="divergence_loss: expected float | None, got str"):
        TrainConfig(divergence_loss="big")


# ---- resume ----


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, capsys):
    cfg = config(tmp_path, model={"preset": "gpt-tiny", "dropout": 0.1}, save_interval=4,
                 keep_last=5)  # fmt: skip
    full = Trainer(cfg, TOKENS, TOKENS)
    full.fit()
    run = tmp_path / "run"
    newest = run / "checkpoints" / "step_0000012"
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # killed while the disk filled up
    shutil.rmtree(run / "best")
    capsys.readouterr()
    resumed = Trainer(cfg, TOKENS, TOKENS, resume=True)
    resumed.fit()  # was: ValueError "model.safetensors is truncated", no resume at all
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: --resume")]
    assert len(warnings) == 1
    assert f"skipping damaged checkpoint {newest}" in warnings[0] and "truncated" in warnings[0]
    assert f"resuming from {run / 'checkpoints' / 'step_0000008'} (step 8)" in err
    assert [r["step"] for r in resumed.history] == [9, 10, 11, 12]
    assert losses(resumed) == losses(full)[8:]  # bit-for-bit
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    # the damaged one was moved aside (kept for a look), and step 12 written again
    assert [p.name[:22] for p in (run / "checkpoints").glob(".damaged-*")] == [
        ".damaged-step_0000012-"
    ]
    ckpt.verify_checkpoint(newest)


def test_newest_intact_checkpoint(tmp_path):
    Trainer(config(tmp_path, max_steps=4, save_interval=2, keep_last=3), TOKENS, TOKENS).fit()
    run = tmp_path / "run"
    assert ckpt.newest_intact_checkpoint(run) == (run / "checkpoints" / "step_0000004", [])
    (run / "checkpoints" / "step_0000004" / "manifest.json").unlink()
    last, damaged = ckpt.newest_intact_checkpoint(run)
    assert last == run / "checkpoints" / "step_0000002"
    assert [(p.name, "manifest.json is missing" in why) for p, why in damaged] == [
        ("step_0000004", True)
    ]
    assert ckpt.newest_intact_checkpoint(tmp_path / "nothing") == (None, [])


@pytest.mark.parametrize(
    "change,match",
    [
        ({"lr": 1e-3}, r"settings differ from the checkpoint's: lr: checkpoint 0.003, now 0.001"),
        ({"max_steps": 20}, r"max_steps: checkpoint 8, now 20 \(only a constant schedule"),
        ({"batch_size": 8, "warmup_steps": 1},
         r"batch_size: checkpoint 4, now 8; warmup_steps: checkpoint 3, now 1"),
        ({"model": {"preset": "gpt-tiny", "n_layer": 3}},
         r"the model differs from the checkpoint's \(n_layer: checkpoint 2, now 3\)"),
    ],
)  # fmt: skip
def test_resume_with_changed_settings_is_refused(tmp_path, change, match):
    cfg = config(tmp_path, max_steps=8, save_interval=4)
    Trainer(cfg, TOKENS, TOKENS).fit()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000008")
    changed = TrainConfig.from_dict({**cfg.to_dict(), **change})
    with pytest.raises(ValueError, match=match):  # was: resumed with a new schedule (or a
        Trainer(changed, TOKENS, TOKENS, resume=True).fit()  # missing/unexpected keys error)


def test_resume_allows_harmless_changes_and_more_steps_at_a_constant_lr(tmp_path):
    cfg = config(tmp_path, max_steps=8, save_interval=4, schedule="constant")
    full = Trainer(config(tmp_path / "full", max_steps=12, schedule="constant"), TOKENS, TOKENS)
    full.fit()
    Trainer(cfg, TOKENS, TOKENS).fit()
    more = config(tmp_path, max_steps=12, save_interval=2, eval_interval=3, keep_last=4,
                  schedule="constant", divergence_loss=50.0)  # fmt: skip
    resumed = Trainer(more, TOKENS, TOKENS, resume=True)
    resumed.fit()
    assert losses(resumed) == losses(full)[8:]


def test_resume_with_another_tokenizer_is_refused(tmp_path):
    tok = bpe_train(TEXT, 300)
    other = bpe_train(TEXT.upper() + TEXT, 300)
    toks = np.array(tok.encode(TEXT))
    cfg = config(tmp_path, max_steps=4, save_interval=2, model={"preset": "gpt-tiny",
                 "vocab_size": 320})  # the same model for both tokenizers  # fmt: skip
    Trainer(cfg, toks, toks, tokenizer=tok).fit()
    with pytest.raises(ValueError, match="tokenizer .* is not the one the checkpoint was trained "
                       r"with \(ranks_sha256 differ\)"):  # fmt: skip
        Trainer(cfg, toks, toks, tokenizer=other, resume=True).fit()


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    cfg = config(tmp_path, max_steps=8, save_interval=4)
    Trainer(cfg, TOKENS, TOKENS).fit()
    run = tmp_path / "run"
    shutil.rmtree(run / "checkpoints" / "step_0000008")
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines) + '\n{"step": 9, "loss": 4.6, "l')  # killed mid-write
    n = len(lines) + 1
    capsys.readouterr()
    Trainer(cfg, TOKENS, TOKENS, resume=True).fit()  # was: json.JSONDecodeError
    assert f"warning: {metrics}:{n}: dropped a torn last line" in capsys.readouterr().err
    steps = [r["step"] for r in read_metrics(metrics) if "loss" in r and "event" not in r]
    assert steps == list(range(1, 9))
    # any other bad line is an error naming the file and the line
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=rf"{metrics}:2: not a metrics record"):
        read_metrics(metrics, drop_torn_last_line=True)
    metrics.write_text("\n".join([*lines, "[1, 2]"]) + "\n")
    with pytest.raises(ValueError, match=rf"{metrics}:{len(lines) + 1}: .*expected a JSON object"):
        read_metrics(metrics)


def test_no_best_when_the_val_loss_is_not_finite(tmp_path):
    t = Trainer(config(tmp_path, max_steps=4, eval_interval=2), TOKENS, TOKENS)
    t.evaluate = lambda n_batches=None: math.nan
    with pytest.raises(TrainingDiverged, match="validation loss is nan at step 2"):
        t.fit()  # was: best_val stayed inf, the run "succeeded" with a NaN val loss
    assert not (tmp_path / "run" / "best").exists()
    assert ckpt.list_checkpoints(tmp_path / "run") == []


def test_a_non_finite_parameter_is_divergence(tmp_path):
    t = Trainer(config(tmp_path, max_steps=8, save_interval=2), TOKENS, TOKENS)
    real_step = t.train_step

    def step():
        rec = real_step()
        if t.step == 3:
            with torch.no_grad():
                t.model.lm_head.weight[0, 0] = math.inf
        return rec

    t.train_step = step
    with pytest.raises(TrainingDiverged, match="non-finite parameters after step 3"):
        t.fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_0000002"]
