"""Whether a checkpoint may be resumed by a run configured as it is now.

A resumed run must take exactly the steps the interrupted one would have taken: the same model,
tokenizer, data and schedule. ``check_resumable`` compares the checkpoint's config.json (model and
"train" sections) and tokenizer with the current ones and refuses any difference outside
``RESUME_MAY_CHANGE``, naming each key with its old and new value. ``newest_resumable`` picks
the checkpoint: the newest intact one, damaged newer ones moved aside.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

from myllm101.train import checkpoint as ckpt
from myllm101.train import distributed as dist
from myllm101.train.config import TrainConfig

# config keys a resumed run may change: they do not alter the schedule or the data of the steps
# it takes (what is logged, evaluated, kept or printed; where the files are; the device and the
# precision). Any other difference is refused (max_steps: see check_resumable).
RESUME_MAY_CHANGE = frozenset({
    "eval_interval", "log_interval", "save_interval", "keep_last", "max_time_s", "progress",
    "sample_prompt", "sample_tokens", "num_threads", "eval_batches", "early_stopping_patience",
    "compile", "gradient_checkpointing", "device", "dtype", "distributed", "max_bad_steps",
    "divergence_loss", "out_dir", "tokens_dir", "overwrite",
    "tokenizer", "model",  # compared by content instead: the tokenizer's ranks, the model config
})  # fmt: skip


def check_resumable(directory: Path, model_cfg, tokenizer, cfg: TrainConfig) -> None:
    """ValueError unless the checkpoint in ``directory`` continues this run as configured:
    the same model config, the same tokenizer, and the same train config except for the
    RESUME_MAY_CHANGE keys (which do not change the schedule or the data). max_steps may
    change only under a constant schedule (the only one that does not depend on it)."""
    from myllm101.tokenizer.formats import FILENAME, load_tokenizer, tokenizer_dict

    where = f"--resume from {directory}"
    saved_model, saved_train = ckpt.read_config(directory)
    old, new = saved_model.to_dict(), model_cfg.to_dict()
    diff = [f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]  # fmt: skip
    if diff:
        raise ValueError(
            f"{where}: the model differs from the checkpoint's ({'; '.join(diff)}); resume "
            f"with the checkpoint's model settings, or train a new run in another out_dir"
        )
    has_tok = (directory / FILENAME).exists()
    if has_tok != (tokenizer is not None):
        raise ValueError(
            f"{where}: the checkpoint was trained {'with' if has_tok else 'without'} a "
            f"tokenizer, this run has {'one' if tokenizer is not None else 'none'}"
        )
    if has_tok:
        keys = ("pattern", "special_tokens", "ranks_sha256")
        a, b = tokenizer_dict(load_tokenizer(directory)), tokenizer_dict(tokenizer)
        bad = [k for k in keys if a[k] != b[k]]
        if bad:
            raise ValueError(
                f"{where}: the tokenizer {cfg.tokenizer!r} is not the one the checkpoint "
                f"was trained with ({', '.join(bad)} differ); resume with that tokenizer"
            )
    if saved_train is None:
        return
    defaults, now = TrainConfig().to_dict(), cfg.to_dict()
    step = json.loads((directory / "trainer_state.json").read_text())["step"]
    changed = []
    for k, v in now.items():
        before = saved_train.get(k, defaults[k])  # (a key added since: its default)
        if k in RESUME_MAY_CHANGE or before == v:
            continue
        if k == "max_steps" and cfg.schedule == "constant" and v > step:
            continue
        note = ""
        if k == "max_steps":
            note = (f" (expected > the checkpoint's step {step})"
                    if cfg.schedule == "constant"
                    else " (only a constant schedule may change it)")  # fmt: skip
        changed.append(f"{k}: checkpoint {before!r}, now {v!r}{note}")
    if changed:
        raise ValueError(
            f"{where}: these settings differ from the checkpoint's: {'; '.join(changed)}; "
            f"they set the run's schedule or data, so a resumed run must keep them (drop the "
            f"overrides, or train a new run in another out_dir)"
        )


def newest_resumable(out_dir: Path, info: dist.DistInfo) -> Path:
    """The newest intact checkpoint of the run in ``out_dir``. Newer damaged ones (truncated,
    altered, a missing manifest) get one stderr warning each and are moved aside (by the main
    rank) to checkpoints/.damaged-NAME-*, so pruning never keeps them in place of new ones."""
    last, damaged = ckpt.newest_intact_checkpoint(out_dir)
    if last is None and not damaged:
        raise ValueError(f"--resume: expected a checkpoint in {out_dir}/checkpoints, found none")
    if last is None:
        raise ValueError(
            f"--resume: no intact checkpoint in {out_dir}/checkpoints: "
            + "; ".join(f"{p.name}: {why}" for p, why in damaged)
        )
    dist.barrier(info)  # every rank has looked before rank 0 moves any
    if info.is_main:
        for p, why in damaged:
            aside = p.parent / f".damaged-{p.name}-{uuid.uuid4().hex[:8]}"
            os.replace(p, aside)
            print(f"warning: --resume: skipping damaged checkpoint {p} ({why}); "
                  f"moved it to {aside.name}", file=sys.stderr)  # fmt: skip
    dist.barrier(info)
    return last
