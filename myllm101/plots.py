"""Figures for the PNGs the app writes (loss curves, sweeps, reports), without pyplot.

``matplotlib.use("Agg")`` would switch the whole process's backend: in a notebook, every plot after
a ``Trainer.fit`` or a sweep would stop showing. A ``matplotlib.figure.Figure`` made directly needs
no backend and no global state, and ``savefig`` writes the PNG itself.

    fig, ax = subplots(figsize=(7, 4))
    ax.plot(steps, losses)
    save(fig, "loss.png")
"""

from __future__ import annotations

from pathlib import Path


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """-> (Figure, Axes or array of Axes), as ``plt.subplots``; ``figsize`` goes to the Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    """A registered colormap by name (``plt.get_cmap`` without pyplot)."""
    import matplotlib

    return matplotlib.colormaps[name]


def save(fig, path, dpi: int = 120) -> Path:
    """Lay out and write ``fig`` to ``path`` (PNG by its suffix) -> the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
