"""Metrics: one JSON object per line in RUN_DIR/metrics.jsonl, and the loss-curve PNG.

{"step": 10, "loss": 5.31, "lr": 0.0003, "grad_norm": 1.2, "tokens": 20480, "tok_per_s": ...}
{"step": 200, "val_loss": 4.1, "val_ppl": 60.3}
{"step": 57, "event": "non_finite_loss", "loss": NaN}
{"step": 60, "loss": 3.2e9, ..., "event": "diverged", "reason": "training loss 3.2e+09 at ..."}
{"step": 0, "event": "precision", "dtype": "float32", "reason": "auto: float32, since ...", ...}
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


class MetricsLog:
    """Appends records to a JSONL file (no-op when ``enabled`` is False: ranks other than 0)."""

    def __init__(self, path, enabled: bool = True, keep_until_step: int | None = None):
        self.path, self.enabled = Path(path), enabled
        if enabled and keep_until_step is not None and self.path.exists():
            # resuming: drop records past the checkpoint, they will be written again
            recs = read_metrics(self.path, drop_torn_last_line=True)  # killed mid-write: torn
            kept = [r for r in recs if r.get("step", 0) <= keep_until_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def log(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def matmul_params(model) -> int:
    """Weights that take part in a matmul per token: every ``nn.Linear`` weight, once (a head
    tied to the embedding counts as the head). Embedding lookups, norms and biases do no
    multiply-adds worth counting, so position / token-type tables and an untied input embedding
    are left out, unlike a plain parameter count."""
    import torch

    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(w.numel() for w in weights.values())


def train_flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> int:
    """FLOPs of one training token (forward + backward = 3x forward), as in the PaLM appendix:
    6 per matmul parameter (2 forward, 4 backward; pass ``matmul_params(model)``) plus the
    attention scores and weighted sums, 6 * 2 * n_layer * n_embd * seq_len (counted for the full
    T x T square, as PaLM and nanoGPT do). A forward-only pass is one third of it."""
    return 6 * n_params + 12 * n_layer * n_embd * seq_len


def read_metrics(path, drop_torn_last_line: bool = False) -> list[dict]:
    """The records of a metrics.jsonl. A line that is not a JSON object is a ValueError naming
    the file and line, except, with ``drop_torn_last_line`` (resuming), the last line: a run
    killed while appending leaves it cut short; it is dropped with a warning on stderr."""
    path = Path(path)
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    out = []
    for i, line in lines:
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        except ValueError as e:  # (json.JSONDecodeError is a ValueError)
            if drop_torn_last_line and i == lines[-1][0]:
                print(f"warning: {path}:{i}: dropped a torn last line (a run killed while "
                      f"writing it): {line[:60]!r}", file=sys.stderr)  # fmt: skip
                break
            raise ValueError(f"{path}:{i}: not a metrics record ({e}): {line[:60]!r}") from None
        out.append(rec)
    return out


def plot_loss_curve(metrics_path, out_png) -> Path:
    """Train loss (and val loss, dots) against step -> PNG."""
    from myllm101.plots import save, subplots

    recs = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
    val = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    train = [(s, v) for s, v in train if math.isfinite(v)]
    if not train and not val:
        raise ValueError(f"{metrics_path}: no loss records to plot")
    fig, ax = subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out_png)
