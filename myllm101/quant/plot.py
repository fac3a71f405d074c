"""Perplexity vs size on disk, one point per evaluated model (``myllm101 eval --plot``).

One panel per held-out text (Shakespeare test split, Python stdlib); x = model.safetensors MB,
y = perplexity; each point labelled with its scheme.
"""

from __future__ import annotations

from pathlib import Path

from myllm101.quant.eval import table_rows

TEXT_COLUMNS = (
    ("ppl_shakespeare", "Shakespeare test split"),
    ("ppl_stdlib", "Python stdlib slice"),
)


def plot_perplexity_vs_size(results: list[dict], path, title: str = "Perplexity vs size") -> Path:
    """Write the PNG to ``path``; returns it. Models without a perplexity (MiniLM) are left out."""
    from myllm101.plots import save, subplots

    rows = [r for r in table_rows(results) if r["ppl_shakespeare"] is not None]
    if not rows:
        raise ValueError("results: expected at least one causal LM with a perplexity, got none")
    fig, axes = subplots(1, len(TEXT_COLUMNS), figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, TEXT_COLUMNS):
        for r in rows:
            ax.scatter(r["size_mb"], r[key], zorder=3)
            ax.annotate(r["scheme"], (r["size_mb"], r[key]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)  # fmt: skip
        ax.set_xlabel("model.safetensors (MB)")
        ax.set_ylabel("perplexity")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save(fig, path, dpi=110)
