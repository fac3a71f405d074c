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
from dataclasses import dataclass
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


def sft_batches(rows: list[dict], tokenizer, block_size: int, batch_size: int, where: str,
                pack: bool = False) -> tuple[list[dict], int]:  # fmt: skip
    """-> (batches in row order, how many rows were too long and left out). Padded to each
    batch's longest example; ``pack``: several examples per row of ``block_size`` tokens
    (finetune/sft.py ``pack``), ``batch_size`` rows a batch, each row's attention_mask the
    (block_size, block_size) mask that keeps every example to itself."""
    from myllm101.finetune.sft import collate, encode_sft, packed_attention_mask, special_id
    from myllm101.finetune.sft import pack as pack_rows

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
    if pack:
        rows = pack_rows(pairs, block_size, pad_id)
        batches = [{"input_ids": rows["input_ids"][i : i + batch_size],
                    "attention_mask": packed_attention_mask(rows["segment_ids"][i : i + batch_size]),
                    "labels": rows["labels"][i : i + batch_size]}
                   for i in range(0, len(rows["input_ids"]), batch_size)]  # fmt: skip
        return batches, skipped
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


@dataclass
class Prepared:
    """A task's data, tokenized once, and the base it was made for (``myllm101 sweep`` runs many
    fine-tunings on one Prepared; each run gets a fresh base from ``fresh_base``)."""

    base: str
    task: str
    batches: dict[str, list[dict]]  # "train", "val" (and "test" when read)
    extra: dict  # what goes into every run's summary.json (examples, data files, baseline, ...)
    labels: list[str] | None  # classify: the label names
    num_labels: int | None
    first: object | None = None  # the base loaded by prepare_data, handed to the first run

    def fresh_base(self):
        """The loaded base (``quant.eval.load_any``): the one prepare_data read, the first time,
        then a fresh load each time (a run changes its base in place)."""
        from myllm101.quant.eval import load_any

        loaded, self.first = self.first, None
        return loaded if loaded is not None else load_any(self.base)


def check_common_options(args: argparse.Namespace, lrs: list[float], methods: list[str]) -> None:
    """Every option ``finetune`` and ``sweep`` share, checked before anything is loaded."""
    from myllm101.checks.finetune import check_finetune_base, check_finetune_options

    for method in methods:
        for lr in lrs:
            check_finetune_options(args.task, method, args.metric, lr, args.batch_size,
                                   args.epochs, args.eval_every, args.patience)  # fmt: skip
    for name in ("max_train", "max_val", "max_test", "max_steps", "max_length"):
        _limit(name.replace("_", "-"), getattr(args, name))
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: expected a directory of JSONL splits")
    if args.base in SHIPPED_TYPES:  # a wrong combination fails before the model is loaded
        check_finetune_base(SHIPPED_TYPES[args.base], args.task, args.base)


def refuse_existing_run(out: Path, args: argparse.Namespace, what: str) -> None:
    """An existing run in ``out`` needs --overwrite (or, for a sweep, --resume): said before any
    loading; claim_run_dir checks again under the lock."""
    from myllm101.train.rundir import is_run_dir

    if is_run_dir(out) and not (args.overwrite or getattr(args, "resume", False)):
        hint = ("--resume to run only its missing points, or " if what == "sweep"
                else "")  # fmt: skip
        raise ValueError(
            f"--out {out}: an existing {what}; pass {hint}--overwrite to move it aside (to a "
            f"sibling {out.name}.replaced-YYYYmmdd-HHMMSS) and start over"
            + (" (finetune does not resume)" if what == "run" else "")
        )


def prepare_data(args: argparse.Namespace, with_test: bool) -> Prepared:
    """Load the base once (its tokenizer and config) and turn the splits into batches."""
    from myllm101.checks.finetune import check_finetune_base
    from myllm101.finetune.metrics import majority_baseline
    from myllm101.quant.eval import load_any

    data = Path(args.data)
    splits = ["train", "val"] + (["test"] if with_test else [])
    files = {s: split_file(data, args.task, s) for s in splits}
    loaded = load_any(args.base)
    if loaded.quantization:
        raise ValueError(
            f"--base {args.base}: a quantized model; fine-tune its float base (qlora quantizes it)"
        )
    check_finetune_base(loaded.cfg.model_type, args.task, args.base)
    limits = {"train": args.max_train, "val": args.max_val, "test": args.max_test}
    rows = {s: read_rows(f, limits[s], args.seed) for s, f in files.items()}

    extra, names, num_labels = {}, None, None
    block = min(args.max_length, loaded.cfg.block_size)
    if args.task == "sft":
        tok = loaded.tokenizer
        if tok is None:
            raise ValueError(f"--base {args.base}: expected a tokenizer with the model, found none")
        if hasattr(tok, "encode_ordinary"):  # our BPE: allow its special tokens
            tok = ChatTokenizer(tok)
        batches, skipped = {}, {}
        for s, r in rows.items():  # only train is packed: val / test scores stay per example
            batches[s], skipped[s] = sft_batches(r, tok, block, args.batch_size, str(files[s]),
                                                 pack=args.pack and s == "train")  # fmt: skip
        extra["too_long_skipped"] = skipped
    else:
        if not hasattr(loaded.tokenizer, "cls_id"):
            raise ValueError(f"--base {args.base}: expected a WordPiece tokenizer (vocab.txt)")
        labels = {s: classify_labels(r, str(files[s])) for s, r in rows.items()}
        num_labels = max(max(y) for y, _ in labels.values()) + 1
        known = {k: v for _, n in labels.values() for k, v in n.items()}
        names = [known.get(i, str(i)) for i in range(num_labels)]
        batches = {s: classify_batches(r, loaded.tokenizer, block, args.batch_size)
                   for s, r in rows.items()}  # fmt: skip
        label, acc = majority_baseline(labels["train"][0], labels["val"][0])
        extra["majority_baseline"] = {"label": names[label], "accuracy": acc}
        extra["labels"] = names
    extra["examples"] = {s: len(r) for s, r in rows.items()}
    extra["data"] = {s: str(f) for s, f in files.items()}
    return Prepared(args.base, args.task, batches, extra, names, num_labels, first=loaded)


def build_run(args: argparse.Namespace, prep: Prepared, method: str, lr: float, r: int):
    """-> (model prepared for ``method``, FinetuneConfig, BestSaver) on a fresh base."""
    from myllm101.finetune.best import BestSaver
    from myllm101.finetune.run import FinetuneConfig, prepare_model, resize_classifier

    loaded = prep.fresh_base()
    if prep.num_labels is not None:
        resize_classifier(loaded.model, prep.num_labels, args.seed)
    model = prepare_model(
        loaded.model, args.task, method, targets=args.targets, r=r, alpha=args.lora_alpha,
        dropout=args.lora_dropout, base_name=args.base, seed=args.seed,
        recompute=args.recompute,
    )  # fmt: skip
    cfg = FinetuneConfig(
        task=args.task, method=method, metric=args.metric, lr=lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs,
        max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience,
        seed=args.seed, eval_test=getattr(args, "eval_test", False),
        progress=not args.no_progress,
    )  # fmt: skip
    saver = BestSaver(method, base=args.base, task=args.task, labels=prep.labels,
                      model_cfg=model.cfg, tokenizer=loaded.tokenizer,
                      extra_files=loaded.extra_files)  # fmt: skip
    return model, cfg, saver


def run_one(args: argparse.Namespace, prep: Prepared, out: Path, method: str, lr: float, r: int,
            extra: dict | None = None) -> dict:  # fmt: skip
    """One fine-tuning run into ``out`` (claimed: a fresh directory, or --overwrite) -> summary."""
    from myllm101.finetune.run import finetune
    from myllm101.train.rundir import claim_run_dir

    model, cfg, saver = build_run(args, prep, method, lr, r)
    lock = claim_run_dir(out, overwrite=args.overwrite)
    try:
        return finetune(
            model, prep.batches["train"], prep.batches["val"], cfg, out, saver,
            test_batches=prep.batches.get("test"), num_labels=prep.num_labels,
            extra_summary={**prep.extra, **(extra or {})},
        )  # fmt: skip
    finally:
        lock.release()


def cmd_finetune(args: argparse.Namespace) -> int:
    from myllm101.finetune.run import format_summary

    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.method, 1e-3)
    check_common_options(args, [lr], [args.method])  # before anything is loaded
    out = Path(args.out)
    refuse_existing_run(out, args, "run")
    prep = prepare_data(args, with_test=args.eval_test)
    summary = run_one(args, prep, out, args.method, lr, args.lora_r)
    print(format_summary(summary))
    return 0


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options ``finetune`` and ``sweep`` share (data, schedule, selection, LoRA shape)."""
    from myllm101.checks.finetune import FINETUNE_TASKS

    p.add_argument("--base", required=True, help="smollm2, minilm, or a model/run directory")
    p.add_argument("--task", choices=FINETUNE_TASKS, required=True)
    p.add_argument("--data", required=True, help="directory of {sft|genre}-{split}.jsonl")
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=50, help="steps between val evaluations")
    p.add_argument("--patience", type=int, default=3,
                   help="evaluations without a new best before stopping")  # fmt: skip
    p.add_argument("--metric", default=None, choices=("loss", "accuracy", "macro_f1"),
                   help="val metric to select on (sft: loss; classify: macro_f1 by default)")  # fmt: skip
    p.add_argument("--max-length", type=int, default=256,
                   help="tokens per example (with --pack: per packed row)")  # fmt: skip
    p.add_argument("--pack", action="store_true",
                   help="sft: several train examples per row, each attending to itself only")  # fmt: skip
    p.add_argument("--max-train", type=int, default=None, help="rows of train kept (seeded)")
    p.add_argument("--max-val", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                   help="LoRA target layers (default: q_proj v_proj)")  # fmt: skip
    p.add_argument("--recompute", choices=("auto", "none", "mlp", "blocks"), default="auto",
                   help="what backward recomputes instead of keeping: auto = mlp for lora / "
                   "qlora (GPT, Llama), none otherwise; blocks = gradient checkpointing")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing run in --out aside and start afresh")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_subparsers(subparsers) -> None:
    """Add ``finetune`` and ``sweep`` to an ``add_subparsers()`` object."""
    from myllm101.checks.finetune import FINETUNE_METHODS
    from myllm101.finetune import sweep

    p = subparsers.add_parser("finetune", help="fine-tune a model (LoRA, QLoRA or full)")
    add_common_options(p)
    p.add_argument("--method", choices=FINETUNE_METHODS, default="lora")
    p.add_argument("--lr", type=float, default=None,
                   help="default: 1e-3 for lora/qlora, 5e-5 for full")  # fmt: skip
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--eval-test", action="store_true",
                   help="evaluate the test split once, on the best state, at the end")  # fmt: skip
    p.set_defaults(func=guarded(cmd_finetune))
    sweep.add_subparser(subparsers)


def run(argv: list[str] | None = None) -> int:
    """``myllm101 finetune ...`` on its own -> exit code (tests use it)."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
