"""``myllm101 finetune``: fine-tune SmolLM2, MiniLM or a model directory of ours.

    myllm101 finetune --base smollm2|minilm|DIR --method full|lora|qlora --task sft|classify
                      --data DIR --out RUN_DIR [--epochs 1] [--max-steps N] [--batch-size 8]
                      [--lr LR] [--eval-every 50] [--patience 3] [--metric loss|accuracy|macro_f1]
                      [--max-length 256] [--max-train N] [--max-val N] [--max-test N]
                      [--lora-r 8] [--lora-alpha 16] [--lora-dropout 0.05] [--targets NAME ...]
                      [--eval-test] [--seed 0] [--overwrite] [--no-progress]

--data DIR holds one JSONL file per split, as ``finetune/tasks.py``'s ``write_datasets`` writes
them: ``sft-{train,val,test}.jsonl`` ({"instruction", "response"}) for sft,
``genre-{train,val,test}.jsonl`` ({"text", "label"} and, optionally, "genre": the label's name)
for classify; plain ``{train,val,test}.jsonl`` work too. test is read only with --eval-test.
--max-train / --max-val / --max-test keep that many rows of a split (a seeded choice).

sft: each example is SmolLM2's chat template around the pair, the loss on the response only
(finetune/sft.py); examples longer than --max-length tokens are left out (counted in the summary).
classify: [CLS] text [SEP] cut to --max-length WordPiece tokens, BERT's "cls" head.
The run directory is described in finetune/run.py. Errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from myllm101.cli_util import guarded, run_group

PREFIX = {"sft": "sft", "classify": "genre"}
DEFAULT_LR = {"full": 5e-5, "lora": 1e-3, "qlora": 1e-3}
SHIPPED_TYPES = {"smollm2": "llama", "minilm": "bert"}


# ----------------------------------------------------------------------------------------------
# data


def split_file(data_dir: Path, task: str, split: str) -> Path:
    """DATA/{sft|genre}-{split}.jsonl, else DATA/{split}.jsonl; a clear error when neither is."""
    names = (f"{PREFIX[task]}-{split}.jsonl", f"{split}.jsonl")
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"--data {data_dir}: expected {names[0]} or {names[1]} for the {split} split, found neither"
    )


def read_rows(path: Path, limit: int | None, seed: int) -> list[dict]:
    """The JSON objects of a JSONL file (at most ``limit``: a seeded choice, kept in file order)."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}:{i}: expected a JSON object, got a parse error ({e})"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: expected at least one row, got none")
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(f"{seed}:{path.name}").sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    return rows


class ChatTokenizer:
    """Our BPE tokenizer with its special tokens allowed in ``encode`` (what finetune/sft.py
    expects: "<|im_end|>" -> one id)."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, allowed_special="all")

    def decode(self, ids) -> str:
        return self.tok.decode(ids)


def sft_batches(rows: list[dict], tokenizer, block_size: int, batch_size: int, where: str
                ) -> tuple[list[dict], int]:  # fmt: skip
    """-> (padded batches in row order, how many rows were too long and left out)."""
    from myllm101.finetune.sft import collate, encode_sft, special_id

    pad_id = special_id(tokenizer, "<|im_end|>")
    pairs, skipped = [], 0
    for i, row in enumerate(rows):
        try:
            pairs.append(encode_sft(row, tokenizer, block_size))
        except ValueError as e:
            if "expected at most block_size" not in str(e):
                raise ValueError(f"{where} row {i + 1}: {e}") from None
            skipped += 1
    if not pairs:
        raise ValueError(f"{where}: every example is longer than --max-length {block_size} tokens")
    batches = [collate(pairs[i : i + batch_size], pad_id) for i in range(0, len(pairs), batch_size)]
    return batches, skipped


def classify_labels(rows: list[dict], where: str) -> tuple[list[int], dict[int, str]]:
    """The rows' int labels and {label: name} from the optional "genre" / "label_name" key."""
    labels, names = [], {}
    for i, row in enumerate(rows):
        y = row.get("label")
        if (
            not isinstance(y, int)
            or isinstance(y, bool)
            or y < 0
            or not isinstance(row.get("text"), str)
        ):
            raise ValueError(
                f'{where} row {i + 1}: expected {{"text": str, "label": int >= 0}}, got '
                f"{json.dumps(row)[:80]}"
            )
        labels.append(y)
        name = row.get("genre", row.get("label_name"))
        if isinstance(name, str):
            names.setdefault(y, name)
    return labels, names


def classify_batches(rows: list[dict], tokenizer, max_length: int, batch_size: int
                     ) -> list[dict]:  # fmt: skip
    """[CLS] text [SEP] cut to max_length, padded per batch (WordPiece's [PAD], mask 0)."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tokenizer([r["text"] for r in chunk], max_length=max_length, truncation=True,
                        padding="longest")  # fmt: skip
        out.append({
            "input_ids": torch.tensor(enc["input_ids"], dtype=torch.int64),
            "attention_mask": torch.tensor(enc["attention_mask"], dtype=torch.int64),
            "labels": torch.tensor([r["label"] for r in chunk], dtype=torch.int64),
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# the command


def _limit(name: str, v: int | None) -> None:
    if v is not None and v < 1:
        raise ValueError(f"--{name}: expected >= 1, got {v}")


def cmd_finetune(args: argparse.Namespace) -> int:
    from myllm101.checks import check_finetune_base, check_finetune_options
    from myllm101.finetune.metrics import majority_baseline
    from myllm101.finetune.run import (
        BestSaver,
        FinetuneConfig,
        finetune,
        format_summary,
        prepare_model,
        resize_classifier,
    )

    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.method, 1e-3)
    # every option is checked before anything is loaded
    check_finetune_options(args.task, args.method, args.metric, lr, args.batch_size, args.epochs,
                           args.eval_every, args.patience)  # fmt: skip
    for name in ("max_train", "max_val", "max_test", "max_steps", "max_length"):
        _limit(name.replace("_", "-"), getattr(args, name))
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: expected a directory of JSONL splits")
    splits = ["train", "val"] + (["test"] if args.eval_test else [])
    files = {s: split_file(data, args.task, s) for s in splits}
    out = Path(args.out)
    from myllm101.train.rundir import claim_run_dir, is_run_dir

    if is_run_dir(out) and not args.overwrite:  # before any loading; claim_run_dir checks again
        raise ValueError(
            f"--out {out}: an existing run; pass --overwrite to move it aside (to a sibling "
            f"{out.name}.replaced-YYYYmmdd-HHMMSS) and start over (finetune does not resume)"
        )
    if args.base in SHIPPED_TYPES:  # a wrong combination fails before the model is loaded
        check_finetune_base(SHIPPED_TYPES[args.base], args.task, args.base)

    from myllm101.quant.eval import load_any

    loaded = load_any(args.base)
    if loaded.quantization:
        raise ValueError(
            f"--base {args.base}: a quantized model; fine-tune its float base (qlora quantizes it)"
        )
    check_finetune_base(loaded.cfg.model_type, args.task, args.base)
    limits = {"train": args.max_train, "val": args.max_val, "test": args.max_test}
    rows = {s: read_rows(f, limits[s], args.seed) for s, f in files.items()}

    extra, names = {}, None
    if args.task == "sft":
        tok = loaded.tokenizer
        if tok is None:
            raise ValueError(f"--base {args.base}: expected a tokenizer with the model, found none")
        if hasattr(tok, "encode_ordinary"):  # our BPE: allow its special tokens
            tok = ChatTokenizer(tok)
        block = min(args.max_length, loaded.cfg.block_size)
        batches, skipped = {}, {}
        for s, r in rows.items():
            batches[s], skipped[s] = sft_batches(r, tok, block, args.batch_size, str(files[s]))
        extra["too_long_skipped"] = skipped
        num_labels = None
    else:
        if not hasattr(loaded.tokenizer, "cls_id"):
            raise ValueError(f"--base {args.base}: expected a WordPiece tokenizer (vocab.txt)")
        labels = {s: classify_labels(r, str(files[s])) for s, r in rows.items()}
        num_labels = max(max(y) for y, _ in labels.values()) + 1
        known = {k: v for _, n in labels.values() for k, v in n.items()}
        names = [known.get(i, str(i)) for i in range(num_labels)]
        block = min(args.max_length, loaded.cfg.block_size)
        batches = {s: classify_batches(r, loaded.tokenizer, block, args.batch_size)
                   for s, r in rows.items()}  # fmt: skip
        label, acc = majority_baseline(labels["train"][0], labels["val"][0])
        extra["majority_baseline"] = {"label": names[label], "accuracy": acc}
        extra["labels"] = names
        resize_classifier(loaded.model, num_labels, args.seed)
    extra["examples"] = {s: len(r) for s, r in rows.items()}
    extra["data"] = {s: str(f) for s, f in files.items()}

    model = prepare_model(
        loaded.model, args.task, args.method, targets=args.targets, r=args.lora_r,
        alpha=args.lora_alpha, dropout=args.lora_dropout, base_name=args.base, seed=args.seed,
    )  # fmt: skip
    cfg = FinetuneConfig(
        task=args.task, method=args.method, metric=args.metric, lr=lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs,
        max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience,
        seed=args.seed, eval_test=args.eval_test, progress=not args.no_progress,
    )  # fmt: skip
    saver = BestSaver(args.method, base=args.base, task=args.task, labels=names,
                      model_cfg=model.cfg, tokenizer=loaded.tokenizer,
                      extra_files=loaded.extra_files)  # fmt: skip

    lock = claim_run_dir(out, overwrite=args.overwrite)
    try:
        summary = finetune(
            model, batches["train"], batches["val"], cfg, out, saver,
            test_batches=batches.get("test"), num_labels=num_labels, extra_summary=extra,
        )  # fmt: skip
    finally:
        lock.release()
    print(format_summary(summary))
    return 0


def add_subparsers(subparsers) -> None:
    """Add ``finetune`` to an ``add_subparsers()`` object."""
    from myllm101.checks import FINETUNE_METHODS, FINETUNE_TASKS

    p = subparsers.add_parser("finetune", help="fine-tune a model (LoRA, QLoRA or full)")
    p.add_argument("--base", required=True, help="smollm2, minilm, or a model/run directory")
    p.add_argument("--method", choices=FINETUNE_METHODS, default="lora")
    p.add_argument("--task", choices=FINETUNE_TASKS, required=True)
    p.add_argument("--data", required=True, help="directory of {sft|genre}-{split}.jsonl")
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None,
                   help="default: 1e-3 for lora/qlora, 5e-5 for full")  # fmt: skip
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=50, help="steps between val evaluations")
    p.add_argument("--patience", type=int, default=3,
                   help="evaluations without a new best before stopping")  # fmt: skip
    p.add_argument("--metric", default=None, choices=("loss", "accuracy", "macro_f1"),
                   help="val metric to select on (sft: loss; classify: macro_f1 by default)")  # fmt: skip
    p.add_argument("--max-length", type=int, default=256, help="tokens per example")
    p.add_argument("--max-train", type=int, default=None, help="rows of train kept (seeded)")
    p.add_argument("--max-val", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                   help="LoRA target layers (default: q_proj v_proj)")  # fmt: skip
    p.add_argument("--eval-test", action="store_true",
                   help="evaluate the test split once, on the best state, at the end")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing run in --out aside and start afresh")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_finetune))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 finetune ...`` on its own -> exit code (tests use it)."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
