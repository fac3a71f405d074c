"""A finished run's model, exported to the top of its directory so ``sample --model RUN_DIR`` and
``load_model(RUN_DIR)`` find it: RUN_DIR/{config.json, model.safetensors, tokenizer}, copied from
best/ if there is one, else from the latest checkpoint, then RUN_DIR/manifest.json over just
those files (``load_model`` verifies it; the run's other files are not in it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from myllm101.train import checkpoint as ckpt


def export_run(out_dir: Path) -> None:
    """Copy the run's best (or latest) checkpoint's model files to ``out_dir`` with a manifest;
    nothing when the run has neither. The source checkpoint is verified first and the copies
    must hash the same, so a file that rotted on disk is never blessed with a fresh manifest."""
    best = out_dir / "best"
    src = best if best.is_dir() else ckpt.latest_checkpoint(out_dir)
    if src is None:
        return
    source = ckpt.verify_checkpoint(src)["files"]
    # no manifest while the files change: a crash below leaves an export that is refused
    (out_dir / ckpt.MANIFEST).unlink(missing_ok=True)
    names = []
    for name in (*ckpt.MODEL_FILES, ckpt.TOKENIZER_FILE):
        dst = out_dir / name
        if not (src / name).exists():
            dst.unlink(missing_ok=True)  # an earlier export's tokenizer is not this model's
            continue
        tmp = out_dir / f"{ckpt.TMP_PREFIX}{name}"
        shutil.copy2(src / name, tmp)
        tmp.replace(dst)
        names.append(name)
    written = json.loads(ckpt.write_manifest(out_dir, names).read_text())["files"]
    changed = [n for n in names if written[n] != source.get(n)]
    if changed:
        (out_dir / ckpt.MANIFEST).unlink(missing_ok=True)
        raise ValueError(
            f"export {out_dir}: the copies of {changed} differ from {src} (disk error?)"
        )
