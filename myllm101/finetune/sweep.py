"""``myllm101 sweep``: model selection over learning rate x LoRA rank, full fine-tuning as baseline.

    myllm101 sweep --base minilm --task classify --data data/finetune --out runs/sweep-genre \\
                   --lrs 3e-4 1e-3 3e-3 --ranks 4 16 --full-lrs 5e-5 [finetune's options]

Every point of the grid (``--method`` lora or qlora at each lr x rank, plus full fine-tuning at
each of ``--full-lrs``) is one ``myllm101 finetune`` run with the same data, batches, seed and
schedule, written to SWEEP_DIR/<point>/ (finetune/run.py's run directory: metrics.jsonl,
summary.json, best/). The data is tokenized once; each run starts from a freshly loaded base.

Selection follows train / val / test discipline. Each run keeps its best val state (early
stopping); the sweep then picks the point whose best val metric is best (ties: fewer trainable
parameters). The test split is evaluated ONCE, on that point's best state, after every run has
finished; no other point ever sees it (``--no-test`` skips it).

SWEEP_DIR gets, besides the runs:

    sweep.json   every point's options and scores, the selected point, its test scores
    sweep.md     the same as a table, with a "fit" column (below)
    curves.png   train loss (smoothed) and val loss against the step for every point, and the
                 val metric for classify: over-fitting shows as a val curve turning up while the
                 train curve still falls; under-fitting as both staying high

The "fit" column reads each run's curves (train loss: the mean of its first and of its last 10%
of steps): ``unstable`` when the train loss ended higher than it started, or the val loss never
went below its start and jumped more than 10% above it (the learning rate is too high);
``underfits`` when it ended above 90% of where it started (the model barely fits its own
training data); ``overfits`` when the last val loss is more than 5% above the run's lowest val
loss while the train loss kept falling after that lowest point; else ``ok``. A rule of thumb,
stated here so a reader can check it against the PNG.

``--resume`` keeps every finished point (its summary.json) and runs the rest; ``--overwrite``
moves the whole sweep aside and starts over.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from myllm101.cli_util import guarded

OVERFIT, UNDERFIT = 0.05, 0.90  # the "fit" column's thresholds (module docstring)


@dataclass(frozen=True)
class Point:
    """One grid point: a fine-tuning method with its learning rate (and LoRA rank)."""

    method: str  # "full" | "lora" | "qlora"
    lr: float
    r: int | None = None  # None for full

    @property
    def name(self) -> str:
        """``lora-r8-lr0.001``, ``full-lr5e-05``: the point's directory in the sweep."""
        rank = "" if self.r is None else f"-r{self.r}"
        return f"{self.method}{rank}-lr{self.lr:g}"


def grid(method: str, lrs: list[float], ranks: list[int], full_lrs: list[float]) -> list[Point]:
    """The sweep's points: ``method`` at every lr x rank, then full at every full lr."""
    if method not in ("lora", "qlora"):
        raise ValueError(f"--method: expected lora or qlora for the grid, got {method!r}")
    bad = [r for r in ranks if r < 1]
    if bad:
        raise ValueError(f"--ranks: expected ranks >= 1, got {bad}")
    points = [Point(method, lr, r) for lr in lrs for r in ranks]
    points += [Point("full", lr) for lr in full_lrs]
    if not points:
        raise ValueError("--lrs / --ranks / --full-lrs: expected at least one point, got none")
    names = [p.name for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"grid: expected distinct points, got {dup} more than once")
    return points


# ----------------------------------------------------------------------------------------------
# reading a finished run


def curves(metrics_path: Path) -> dict[str, list]:
    """A run's metrics.jsonl -> {"step", "loss"} (train, per step) and {"val_step", "val_loss",
    "val_metric"...} lists (val, per evaluation)."""
    from myllm101.train.metrics import read_metrics

    out = {"step": [], "loss": [], "val_step": [], "val": []}
    for rec in read_metrics(metrics_path):
        if "loss" in rec and "event" not in rec:
            out["step"].append(rec["step"])
            out["loss"].append(rec["loss"])
        elif "val_loss" in rec:
            out["val_step"].append(rec["step"])
            out["val"].append({k.removeprefix("val_"): v for k, v in rec.items()
                               if k.startswith("val_")})  # fmt: skip
    return out


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, bias-corrected (so the first points are not pulled to 0)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def fit_label(c: dict) -> str:
    """unstable / underfits / overfits / ok from a run's curves (the module docstring's rule)."""
    train, val = c["loss"], [v["loss"] for v in c["val"]]
    k = max(1, len(train) // 10)
    if len(val) >= 2 and min(val[1:]) >= val[0] and max(val) > (1 + 2 * OVERFIT) * val[0]:
        return "unstable"  # val never improved on the start, and jumped above it
    if len(train) >= 2:
        start, end = sum(train[:k]) / k, sum(train[-k:]) / k
        if end > start:
            return "unstable"
        if end > UNDERFIT * start:
            return "underfits"
    if len(val) < 2:
        return "ok"
    lowest = min(range(len(val)), key=val.__getitem__)
    # the train loss still falling after the lowest val loss: the last k steps' mean below the
    # mean of the k steps up to that evaluation
    upto = [x for s, x in zip(c["step"], train) if s <= c["val_step"][lowest]]
    falling = len(upto) >= k and sum(train[-k:]) / k < 0.98 * sum(upto[-k:]) / k
    if val[-1] > (1 + OVERFIT) * val[lowest] and falling:
        return "overfits"
    return "ok"


def point_row(point: Point, run_dir: Path) -> dict:
    """One table row from a finished run's summary.json and metrics.jsonl."""
    s = json.loads((run_dir / "summary.json").read_text())
    c = curves(run_dir / "metrics.jsonl")
    metric = s["metric"].removeprefix("val_")
    last = c["loss"][-max(1, len(c["loss"]) // 10) :]  # the last 10% of the steps
    return {
        "point": point.name,
        **asdict(point),
        "trainable": trainable_count(s["trainable"]),
        "steps": s["steps"],
        "best_step": s["best_step"],
        "stopped_early": s["stopped_early"],
        "metric": metric,
        "val_initial": s["val_initial"][metric],
        "val_best": s["val_best"][metric] if s["val_best"] else math.nan,
        "val_loss_at_best": s["val_best"]["loss"] if s["val_best"] else math.nan,
        "val_loss_min": min((v["loss"] for v in c["val"]), default=math.nan),
        "train_loss_end": sum(last) / len(last) if last else math.nan,
        "val_loss_end": c["val"][-1]["loss"] if c["val"] else math.nan,
        "fit": fit_label(c),
        "seconds": s["seconds"],
        "dir": str(run_dir),
    }


def trainable_count(text: str) -> int:
    """'trainable params: 1,234 || ...' (adapters.trainable_summary) -> 1234."""
    head = text.split("||")[0].split(":")[-1]
    return int(head.replace(",", "").strip())


def select(rows: list[dict], higher_is_better: bool) -> dict:
    """The row with the best val metric (ties: fewer trainable parameters, then grid order)."""
    finite = [r for r in rows if math.isfinite(r["val_best"])]
    if not finite:
        raise ValueError("sweep: no point reached a finite val score; nothing to select")
    sign = -1 if higher_is_better else 1
    return min(finite, key=lambda r: (sign * r["val_best"], r["trainable"]))


# ----------------------------------------------------------------------------------------------
# writing the sweep


def plot_curves(runs: dict[str, dict], metric: str, selected: str, path: Path) -> Path:
    """curves.png: train loss (smoothed), val loss and (unless the metric is the loss) the val
    metric against the step, one line per point; the selected point drawn thicker."""
    from myllm101.plots import colormap, save, subplots

    panels = 2 if metric == "loss" else 3
    fig, axes = subplots(1, panels, figsize=(5.2 * panels, 4.2))
    colors = colormap("tab10")
    for i, (name, c) in enumerate(runs.items()):
        style = {"color": colors(i % 10), "lw": 2.6 if name == selected else 1.2,
                 "label": name + (" (selected)" if name == selected else "")}  # fmt: skip
        if c["loss"]:
            axes[0].plot(c["step"], smooth(c["loss"]), **style)
        axes[1].plot(c["val_step"], [v["loss"] for v in c["val"]], marker="o", ms=3, **style)
        if panels == 3:
            axes[2].plot(c["val_step"], [v[metric] for v in c["val"]], marker="o", ms=3, **style)
    axes[0].set_title("train loss (EMA 0.9)")
    axes[1].set_title("val loss")
    if panels == 3:
        axes[2].set_title(f"val {metric}")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    return save(fig, path, dpi=110)


def table_md(rows: list[dict], selected: dict, test: dict | None, header: str) -> str:
    """sweep.md: one row per point, the selected one in bold, then the test line."""
    m = rows[0]["metric"]
    lines = [
        f"# Sweep: {header}",
        "",
        f"Selected on the best val {m} (each run's best state, early stopping); the test split "
        "is evaluated once, on the selected point only.",
        "",
        f"| point | trainable | steps | best step | val {m} before | best val {m} | "
        "val loss there | lowest val loss | train loss (end) | val loss (end) | fit | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        name = f"**{r['point']}**" if r is selected else r["point"]
        early = " (early stop)" if r["stopped_early"] else ""
        lines.append(
            f"| {name} | {r['trainable']:,} | {r['steps']}{early} | {r['best_step']} | "
            f"{r['val_initial']:.4f} | {r['val_best']:.4f} | {r['val_loss_at_best']:.4f} | "
            f"{r['val_loss_min']:.4f} | "
            f"{r['train_loss_end']:.4f} | {r['val_loss_end']:.4f} | {r['fit']} | "
            f"{r['seconds']:.0f} |"
        )
    lines.append("")
    if test is not None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in test.items())
        lines.append(f"Test, selected point {selected['point']} (best state): {scores}.")
    else:
        lines.append("Test: not evaluated (--no-test).")
    lines += ["", "![train and val curves](curves.png)", ""]
    return "\n".join(lines)


def evaluate_test(args: argparse.Namespace, prep, point: Point, run_dir: Path) -> dict:
    """The selected point's best state, restored onto a fresh base, scored on test: once."""
    from myllm101.finetune.cli import build_run
    from myllm101.finetune.run import evaluate

    model, _, saver = build_run(args, prep, point.method, point.lr, point.r or args.lora_r)
    saver.restore(model, run_dir / "best")
    return evaluate(model, prep.batches["test"], args.task, prep.num_labels)


def finished(run_dir: Path, point: Point) -> bool:
    """A finished run of this very point (its summary.json records the same method and lr)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return False
    s = json.loads(path.read_text())
    return s.get("method") == point.method and s.get("config", {}).get("lr") == point.lr


def cmd_sweep(args: argparse.Namespace) -> int:
    from myllm101.finetune.cli import check_common_options, prepare_data, refuse_existing_run
    from myllm101.finetune.run import HIGHER_IS_BETTER
    from myllm101.train.rundir import claim_run_dir

    points = grid(args.method, args.lrs, args.ranks, args.full_lrs)
    check_common_options(args, sorted({p.lr for p in points}), sorted({p.method for p in points}))
    out = Path(args.out)
    refuse_existing_run(out, args, "sweep")
    prep = prepare_data(args, with_test=not args.no_test)
    from myllm101.train.rundir import is_run_dir

    lock = claim_run_dir(out, resume=args.resume and is_run_dir(out), overwrite=args.overwrite)
    try:
        return run_sweep(args, prep, points, out, HIGHER_IS_BETTER)
    finally:
        lock.release()


def run_sweep(args, prep, points: list[Point], out: Path, higher: dict) -> int:
    from myllm101.finetune.cli import run_one

    # the sweep's plan first: a --resume knows which points belong to it
    plan = {"points": [p.name for p in points], "task": args.task, "base": args.base}
    (out / "sweep.json").write_text(json.dumps({"plan": plan}, indent=2) + "\n")
    rows, runs = [], {}
    for i, point in enumerate(points, 1):
        run_dir = out / point.name
        if args.resume and finished(run_dir, point):
            print(f"[{i}/{len(points)}] {point.name}: finished before, kept")
        else:
            print(f"[{i}/{len(points)}] {point.name}")
            # an unfinished point (a --resume after a crash) is moved aside, never continued
            point_args = argparse.Namespace(**{**vars(args), "overwrite": run_dir.exists()})
            run_one(point_args, prep, run_dir, point.method, point.lr, point.r or args.lora_r,
                    extra={"sweep_point": point.name})  # fmt: skip
        rows.append(point_row(point, run_dir))
        r = rows[-1]
        print(f"    best val {r['metric']} {r['val_best']:.4f} at step {r['best_step']} of "
              f"{r['steps']}, {r['seconds']:.0f} s, {r['fit']}")  # fmt: skip
        runs[point.name] = curves(run_dir / "metrics.jsonl")
    metric = rows[0]["metric"]
    best = select(rows, higher[metric])
    test = None
    if not args.no_test:
        chosen = points[[p.name for p in points].index(best["point"])]
        test = evaluate_test(args, prep, chosen, out / chosen.name)
    header = f"{args.method} / full on {args.base}, task {args.task}"
    plot_curves(runs, metric, best["point"], out / "curves.png")
    (out / "sweep.md").write_text(table_md(rows, best, test, header))
    result = {"plan": plan, "metric": f"val_{metric}", "higher_is_better": higher[metric],
              "rows": rows, "selected": best["point"], "test": test,
              "baseline": {k: prep.extra[k] for k in ("majority_baseline",) if k in prep.extra}}  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_sweep(result, out))
    return 0


def format_sweep(result: dict, out: Path) -> str:
    """A few lines for the terminal."""
    m = result["metric"]
    lines = [f"sweep: {len(result['rows'])} points, selected on {m}"]
    for r in result["rows"]:
        mark = "*" if r["point"] == result["selected"] else " "
        lines.append(f" {mark} {r['point']:<22} best {m} {r['val_best']:.4f}  "
                     f"trainable {r['trainable']:>11,}  {r['fit']}")  # fmt: skip
    if result["test"] is not None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items())
        lines.append(f"  test, {result['selected']} only: {scores}")
    lines.append(f"  table: {out / 'sweep.md'}, curves: {out / 'curves.png'}")
    return "\n".join(lines)


def add_subparser(subparsers) -> None:
    """Add ``sweep`` to an ``add_subparsers()`` object."""
    from myllm101.finetune.cli import add_common_options

    p = subparsers.add_parser("sweep", help="fine-tune over lr x LoRA rank (+ full), select on val")
    add_common_options(p)
    p.add_argument("--method", choices=("lora", "qlora"), default="lora",
                   help="the adapter method of the grid points")  # fmt: skip
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3],
                   help="learning rates of the adapter points")  # fmt: skip
    p.add_argument("--ranks", type=int, nargs="+", default=[4, 16], help="LoRA ranks")
    p.add_argument("--full-lrs", type=float, nargs="*", default=[5e-5],
                   help="learning rates of the full fine-tuning baseline (none: no baseline)")  # fmt: skip
    p.add_argument("--no-test", action="store_true", help="do not evaluate the test split")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished points of an existing sweep, run the rest")  # fmt: skip
    p.set_defaults(func=guarded(cmd_sweep), lora_r=8)
