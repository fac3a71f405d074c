"""A fine-tuning run: train / val / test discipline, early stopping, the best state kept on disk.

    model = prepare_model(base_model, task="sft", method="lora", r=8, alpha=16)
    summary = finetune(model, train_batches, val_batches, FinetuneConfig(task="sft"), "runs/ft",
                       saver=BestSaver("lora", base="smollm2"))
    print(format_summary(summary))

The loop: AdamW over the trainable parameters only (LoRA factors, plus the classification head
for ``classify``; every weight for ``full``), gradient clipping, the train batches reshuffled each
epoch (seeded). The val split is evaluated before the first step (the base model's score: what
fine-tuning has to beat) and every ``eval_every`` steps and at the last step. Each evaluation
whose metric beats the best so far (strictly) writes the model's state to ``RUN_DIR/best/``; after
``patience`` evaluations in a row without one, the run stops (early stopping).

The metric: the token-weighted val loss for ``sft`` (lower is better); macro-F1 (default),
accuracy or the val loss for ``classify`` (higher, higher, lower). The test split is never looked
at while training: with ``eval_test`` it is evaluated once, at the end, on the best state read
back from ``RUN_DIR/best/`` (not on the last weights).

RUN_DIR holds (the same names as ``myllm101 train``'s run directory):

    metrics.jsonl   {"step", "loss", "lr"} per step; {"step", "val_loss", "val_accuracy", ...,
                    "best": bool} per evaluation; {"event": "early_stop" | "test", ...}
    loss.png        train loss and val loss against the step
    summary.json    options, steps, the best step and its val scores, the test scores (or null)
    best/           (finetune/best.py) lora, qlora: adapter_config.json + adapter_model.safetensors (PEFT's format,
                    finetune/adapters.py), and head.safetensors (the trained pooler + classifier,
                    classify only); full: config.json + model.safetensors (+ tokenizer, vocab.txt),
                    as ``load_model`` reads them. Always finetune.json ({"base", "method", "task",
                    "labels", "quantization"}: what ``generate --adapter`` needs to rebuild the
                    base) and manifest.json (size and sha256 of every file). Written into a temp
                    directory and renamed into place: a crash leaves the previous best intact.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from torch import nn

from myllm101.checks.finetune import check_finetune_options
from myllm101.data.collate import IGNORE_INDEX
from myllm101.finetune.best import HEAD_MODULES, BestSaver

# int8 base for qlora: every Linear but the heads (lm_head may be tied; BERT's stay float to train)
QLORA_SKIP = ("lm_head", "pooler", "classifier", "mlm_head.*")
HIGHER_IS_BETTER = {"loss": False, "accuracy": True, "macro_f1": True}

Batch = dict[str, torch.Tensor]


@dataclass
class FinetuneConfig:
    task: str = "sft"  # "sft" | "classify"
    method: str = "lora"  # "full" | "lora" | "qlora" (only recorded here; see prepare_model)
    metric: str | None = None  # None: the task's default ("loss" for sft, "macro_f1" classify)
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 8  # (recorded; the batches come made)
    epochs: int = 1
    max_steps: int | None = None  # stop after this many steps even mid-epoch
    eval_every: int = 50
    patience: int = 3  # evaluations without a new best before stopping
    grad_clip: float = 1.0
    seed: int = 0
    eval_test: bool = False
    progress: bool = True

    def __post_init__(self):
        self.metric = check_finetune_options(
            self.task, self.method, self.metric, self.lr, self.batch_size, self.epochs,
            self.eval_every, self.patience,
        )  # fmt: skip
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ValueError(f"max_steps: expected None or an int >= 1, got {self.max_steps!r}")


# ----------------------------------------------------------------------------------------------
# the model: what trains


def resize_classifier(model: nn.Module, num_labels: int, seed: int = 0) -> nn.Module:
    """A BERT whose classifier has ``num_labels`` outputs: kept when it has already, else a new
    (num_labels, C) layer, N(0, 0.02) weights and zero bias (HF's init), seeded."""
    if model.cfg.num_labels == num_labels:
        return model
    old = model.classifier
    gen = torch.Generator().manual_seed(seed)
    new = type(old)(old.in_features, num_labels).to(old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.randn(new.weight.shape, generator=gen) * 0.02)
        new.bias.zero_()
    model.classifier = new
    model.cfg = dataclasses.replace(model.cfg, num_labels=num_labels)
    return model


def prepare_model(
    model: nn.Module,
    task: str,
    method: str,
    targets: Sequence[str] | None = None,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    base_name: str | None = None,
    seed: int = 0,
    recompute: str = "auto",
) -> nn.Module:
    """Make ``model`` ready to train, in place: ``full`` unfreezes every weight; ``lora`` adds
    LoRA layers on ``targets`` (None: PEFT's default for LLaMA / GPT, q_proj and v_proj for
    BERT) and freezes the rest; ``qlora`` first turns every Linear but the heads into a frozen
    weight-only int8 layer (quant/quantize.py), then does ``lora``. For a BERT (classify) the
    pooler and classifier stay trainable under lora / qlora.

    recompute: what backward recomputes (fast/blocks.py ``set_recompute``): "none", "mlp",
    "blocks", or "auto": "mlp" for lora / qlora on a GPT or Llama (their frozen MLPs' hidden
    activations are most of the step's memory: SmolLM2 LoRA kept 263 MB instead of 405, for
    ~20% more FLOPs), "none" for full fine-tuning and BERT."""
    from myllm101.fast.blocks import RECOMPUTE_MODES, set_recompute
    from myllm101.finetune.adapters import apply_lora, model_type_of

    if recompute != "auto" and recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute: expected auto or one of {', '.join(RECOMPUTE_MODES)}, "
                         f"got {recompute!r}")  # fmt: skip
    bert = model_type_of(model) == "bert"
    if recompute == "auto":
        recompute = "mlp" if method in ("lora", "qlora") and not bert else "none"
    set_recompute(model, recompute)
    torch.manual_seed(seed)  # LoRA's A init
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "qlora":
        from myllm101.quant.quantize import quantize

        quantize(model, "int8", skip=qlora_skip(model))
    if targets is None and bert:
        targets = ("q_proj", "v_proj")
    apply_lora(model, targets=targets, r=r, alpha=alpha, dropout=dropout, base_name=base_name)
    if bert and task == "classify":
        for name in HEAD_MODULES:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
    return model


def qlora_skip(model: nn.Module) -> tuple[str, ...]:
    """The QLORA_SKIP patterns this model has Linears for (quantize refuses one matching none)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return tuple(p for p in QLORA_SKIP if p == "lm_head" or any(fnmatchcase(n, p) for n in names))


# ----------------------------------------------------------------------------------------------
# one step, one evaluation


def batch_loss(model: nn.Module, batch: Batch, task: str) -> torch.Tensor:
    """The mean loss of one batch: response tokens for sft, examples for classify."""
    if task == "sft":
        return model(
            batch["input_ids"], batch["attention_mask"], batch["labels"], scored_only=True
        ).loss
    return model(batch["input_ids"], batch["attention_mask"], batch["labels"], head="cls").loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch], task: str, num_labels: int | None = None
             ) -> dict[str, float]:  # fmt: skip
    """sft: {"loss"}, the mean over every scored token of the split (each batch's mean loss
    weighted by its scored tokens: labels[:, 1:] != -100, since position t predicts t + 1).
    classify: {"loss", "accuracy", "macro_f1"} over every example (argmax of the logits)."""
    from myllm101.finetune.metrics import accuracy, macro_f1

    if not batches:
        raise ValueError("batches: expected at least one evaluation batch, got none")
    was_training = model.training
    model.eval()
    total, count, y_true, y_pred = 0.0, 0, [], []
    for b in batches:
        if task == "sft":
            out = model(b["input_ids"], b["attention_mask"], b["labels"], scored_only=True)
            n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n == 0:  # nothing scored: its loss is nan and its weight 0
                continue
        else:
            out = model(b["input_ids"], b["attention_mask"], b["labels"], head="cls")
            n = len(b["labels"])
            y_true += b["labels"].tolist()
            y_pred += out.logits.argmax(-1).tolist()
        total += float(out.loss) * n
        count += n
    model.train(was_training)
    result = {"loss": total / max(count, 1)}
    if task == "classify":
        result["accuracy"] = accuracy(y_true, y_pred)
        result["macro_f1"] = macro_f1(y_true, y_pred, num_labels)
    return result


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Strictly better than ``best`` (None: anything finite is)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if HIGHER_IS_BETTER[metric] else value < best


# ----------------------------------------------------------------------------------------------
# the loop


def finetune(
    model: nn.Module,
    train_batches: Sequence[Batch],
    val_batches: Sequence[Batch],
    cfg: FinetuneConfig,
    out_dir: str | Path,
    saver: BestSaver,
    test_batches: Sequence[Batch] | None = None,
    num_labels: int | None = None,
    extra_summary: dict | None = None,
    on_eval: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``model`` (prepared: its trainable parameters have requires_grad) as the module
    docstring says; writes RUN_DIR and returns the summary (also in summary.json)."""
    from tqdm import tqdm

    from myllm101.fast.optim import clip_grad_norm, make_adamw, param_groups
    from myllm101.finetune.adapters import trainable_summary
    from myllm101.train.host_memory import reuse_freed_memory
    from myllm101.train.metrics import MetricsLog, plot_loss_curve

    if not train_batches or not val_batches:
        raise ValueError(
            f"data: expected train and val batches, got {len(train_batches)} train and "
            f"{len(val_batches)} val"
        )
    if cfg.eval_test and not test_batches:
        raise ValueError("eval_test: expected test batches, got none")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_dir = out_dir / "best"
    log = MetricsLog(out_dir / "metrics.jsonl")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: expected trainable parameters (prepare_model first), got none")
    opt = make_adamw(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                     weight_decay=cfg.weight_decay)  # fmt: skip
    total = cfg.epochs * len(train_batches)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    metric, started = cfg.metric, time.perf_counter()
    state = {"best": None, "best_step": None, "best_val": None, "bad": 0, "initial": None}

    def run_eval(step: int) -> bool:
        """Evaluate val, keep a new best; True when patience has run out."""
        scores = evaluate(model, val_batches, cfg.task, num_labels)
        better = is_better(metric, scores[metric], state["best"])
        if better:
            saver.save(model, best_dir)
            state.update(best=scores[metric], best_step=step, best_val=scores, bad=0)
        elif step > 0:
            state["bad"] += 1
        if step == 0:
            state["initial"] = scores
        log.log({"step": step, **{f"val_{k}": v for k, v in scores.items()}, "best": better})
        if on_eval is not None:
            on_eval(step, scores)
        return state["bad"] >= cfg.patience

    host_malloc = reuse_freed_memory()  # each step reuses freed pages (train/host_memory.py)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=total, desc=f"finetune {cfg.method} {cfg.task}", unit="step",
               disable=not cfg.progress)  # fmt: skip
    run_eval(0)
    step, stopped_early, epochs_run = 0, False, 0
    model.train()
    while step < total and not stopped_early:
        epochs_run += 1
        for i in torch.randperm(len(train_batches), generator=gen).tolist():
            loss = batch_loss(model, train_batches[i], cfg.task)
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                raise ValueError(f"step {step + 1}: the training loss is {value}; "
                                 f"try a lower --lr (now {cfg.lr:g})")  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                clip_grad_norm(params, cfg.grad_clip)
            opt.step()
            step += 1
            log.log({"step": step, "loss": value, "lr": cfg.lr, "epoch": epochs_run})
            bar.update(1)
            bar.set_postfix(
                loss=f"{value:.4f}",
                best=f"{math.nan if state['best'] is None else state['best']:.4f}",
            )
            if step % cfg.eval_every == 0 or step == total:
                if run_eval(step):
                    stopped_early = step < total
                    if stopped_early:
                        log.log({"step": step, "event": "early_stop", "patience": cfg.patience,
                                 "best_step": state["best_step"]})  # fmt: skip
                    break
            if step >= total:
                break
        model.train()
    bar.close()

    test = None
    if cfg.eval_test:  # once, on the best state as saved
        saver.restore(model, best_dir)
        test = evaluate(model, test_batches, cfg.task, num_labels)
        log.log({"step": step, "event": "test", "best_step": state["best_step"],
                 **{f"test_{k}": v for k, v in test.items()}})  # fmt: skip
    try:
        plot_loss_curve(out_dir / "metrics.jsonl", out_dir / "loss.png")
    except ValueError:
        pass  # nothing finite to plot
    summary = {
        "task": cfg.task,
        "method": cfg.method,
        "base": saver.base,
        "metric": f"val_{metric}",
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "steps": step,
        "planned_steps": total,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "best_step": state["best_step"],
        "best_dir": str(best_dir),
        "val_initial": state["initial"],
        "val_best": state["best_val"],
        "host_malloc": host_malloc,
        "test": test,
        "trainable": trainable_summary(model),
        "seconds": round(time.perf_counter() - started, 2),
        "config": dataclasses.asdict(cfg),
        **(extra_summary or {}),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    m = summary["metric"].removeprefix("val_")
    init, best = summary["val_initial"][m], summary["val_best"][m]
    lines = [
        f"{summary['method']} {summary['task']} on {summary['base']}: {summary['steps']} steps "
        f"({summary['epochs_run']} epoch(s)) in {summary['seconds']:.1f} s"
        + (" - stopped early" if summary["stopped_early"] else ""),
        f"  {summary['trainable']}",
        f"  val {m}: {init:.4f} before, {best:.4f} best (step {summary['best_step']})",
    ]
    if "majority_baseline" in summary:
        b = summary["majority_baseline"]
        lines.append(f"  majority-class baseline on val: accuracy {b['accuracy']:.4f} "
                     f"(always {b['label']!r})")  # fmt: skip
    if summary["test"] is not None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
        lines.append(f"  test (best state): {scores}")
    lines.append(f"  best state: {summary['best_dir']}")
    return "\n".join(lines)
