"""Checkpoint and model directories: one format for resuming a run and for loading a trained
model (``load_model``: ``myllm101 sample``, the post-training samples, your own code).

    RUN_DIR/checkpoints/step_000500/    every save_interval steps (the last ``keep_last`` kept)
    RUN_DIR/best/                       the lowest validation loss so far
    RUN_DIR/{config.json, model.safetensors, myllm101_tokenizer.json}   the final export, with
    RUN_DIR/manifest.json               size and sha256 of just those files

Inside a checkpoint directory:

    config.json              the model config (with model_type) plus "train": the TrainConfig
    model.safetensors        weights; a tied weight is stored once (metadata "tied": "a=b,...")
    training_state.pt        optimizer, scheduler, grad scaler and RNG states: tensors and plain
                             numbers only, loaded with torch.load(weights_only=True)
    trainer_state.json       step, tokens seen, best val loss, ... (the data position is the step)
    myllm101_tokenizer.json  the tokenizer (tokenizer/formats.save_tokenizer)
    manifest.json            size and sha256 of every other file; written last

Atomic: everything is written into a hidden temp directory next to the target, fsynced, then
renamed into place, so a crash mid-save leaves the previous checkpoints as they were. Loading
checks the manifest: a missing, truncated or altered file raises a ValueError that names it.
``load_model`` accepts only directories whose manifest covers config.json, model.safetensors and
the tokenizer (when there is one), so an edited config.json is refused too. A config.json with a
"quantization" entry (``myllm101 quantize``) is rebuilt with its quantized modules
(myllm101/quant/quantize.py ``prepare_quantized``) before the weights are loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from myllm101.config import build_model, config_from_dict
from myllm101.files import sha256_file

MANIFEST = "manifest.json"
# temp names in a run directory: distinctive, so clean_interrupted_saves only ever touches ours
TMP_PREFIX = ".myllm101-tmp-"  # being written: deleted after a crash
OLD_PREFIX = ".myllm101-old-"  # moved aside while its replacement is renamed in
MODEL_FILES = ("config.json", "model.safetensors")  # every model directory's manifest lists these
TOKENIZER_FILE = "myllm101_tokenizer.json"  # = tokenizer.formats.FILENAME (listed when present)
# GPT's attention weights as older myllm101 versions named them (before GPT-2's c_attn / c_proj)
OLD_GPT_ATTENTION = re.compile(r"h\.\d+\.attn\.[qkvo]_proj\.(weight|bias)")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_state_dict(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """state_dict with each shared tensor once: ({name: cpu tensor}, {dropped: kept})."""
    out, seen, tied = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out, tied


def save_model_files(directory: Path, model, model_cfg, train_cfg: dict | None, tokenizer,
                     extra_config: dict | None = None) -> None:  # fmt: skip
    """config.json + model.safetensors (+ the tokenizer) into ``directory`` (not atomic).
    ``extra_config``: more top-level config.json entries (a quantized model's "quantization")."""
    from myllm101.tokenizer.formats import save_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    config = model_cfg.to_dict()
    if train_cfg is not None:
        config["train"] = train_cfg
    config.update(extra_config or {})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tensors, tied = unique_state_dict(model)
    meta = {"format": "pt", "tied": ",".join(f"{a}={b}" for a, b in tied.items())}
    save_file(tensors, directory / "model.safetensors", metadata=meta)
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)


def write_manifest(directory: Path, names=None) -> Path:
    """``directory/manifest.json``: size and sha256 of ``names`` (file names in ``directory``), by
    default of every other file there (a checkpoint). Written to a temp file and renamed, so a
    crash leaves the previous manifest (or none), never half of one. Returns its path."""
    directory = Path(directory)
    if names is None:
        names = [p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST]
    files = {}
    for name in sorted(names):
        p = directory / name
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    path = directory / MANIFEST
    tmp = directory / f"{TMP_PREFIX}{MANIFEST}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"version": 1, "files": files}, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return path


def write_dir_atomically(directory, fill: Callable[[Path], None]) -> Path:
    """``fill(tmp)`` writes the files into a fresh temporary folder beside ``directory``; then a
    manifest over them, an fsync, and one rename onto ``directory`` (replacing one that is there).
    Any failure removes the temporary folder and leaves ``directory`` as it was."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f"{TMP_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
    try:
        fill(tmp)
        write_manifest(tmp)
        _fsync_dir(tmp)
        _commit(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_checkpoint(directory, model, model_cfg, train_cfg, training_state, trainer_state,
                    tokenizer=None) -> Path:  # fmt: skip
    """Write a whole checkpoint atomically to ``directory`` (replacing one that is there)."""

    def fill(tmp: Path) -> None:
        save_model_files(tmp, model, model_cfg, train_cfg, tokenizer)
        torch.save(training_state, tmp / "training_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))

    return write_dir_atomically(directory, fill)


def save_model_dir(directory, model, model_cfg, tokenizer=None, extra_config: dict | None = None,
                   extra_files=()) -> Path:  # fmt: skip
    """A model directory (config.json + ``extra_config``, model.safetensors, the tokenizer, copies
    of ``extra_files``, manifest.json over all of them), written atomically like a checkpoint."""

    def fill(tmp: Path) -> None:
        save_model_files(tmp, model, model_cfg, None, tokenizer, extra_config)
        for src in extra_files:
            shutil.copyfile(src, tmp / Path(src).name)

    return write_dir_atomically(directory, fill)


def _commit(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``; an existing one is moved aside first, then removed."""
    old = None
    if directory.exists():
        old = directory.parent / f"{OLD_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(directory, required=MODEL_FILES) -> dict:
    """Check every file listed in manifest.json; returns the manifest. ValueError on a problem.

    The manifest must list the ``required`` files and, when the directory holds one, the
    tokenizer; other files it does not list (a run's metrics.jsonl, loss.png, ...) are not read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    mpath = directory / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise ValueError(f"{directory}: not a complete checkpoint: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{mpath}: corrupted manifest ({type(e).__name__}: {e})") from None
    _check_manifest_entries(mpath, files)
    wanted = [*required, *([TOKENIZER_FILE] if (directory / TOKENIZER_FILE).exists() else [])]
    unlisted = [name for name in wanted if name not in files]
    if unlisted:
        raise ValueError(
            f"{mpath}: does not cover {', '.join(unlisted)}: not a complete myllm101 model "
            f"directory (a file added by hand?); its files cannot be verified"
        )
    for name, info in files.items():
        p = directory / name
        if not p.is_file():
            raise ValueError(f"checkpoint {directory}: {name} is missing")
        size = p.stat().st_size
        if size != info["size"]:
            raise ValueError(
                f"checkpoint {directory}: {name} is truncated or altered: expected {info['size']} "
                f"bytes, got {size}"
            )
        if sha256_file(p) != info["sha256"]:
            raise ValueError(
                f"checkpoint {directory}: {name} is corrupted or was edited after it was saved "
                f"(sha256 mismatch with {MANIFEST})"
            )
    return manifest


def _check_manifest_entries(mpath: Path, files) -> None:
    """{plain file name: {"size": int, "sha256": str}}, else a ValueError naming the manifest."""
    if not isinstance(files, dict):
        raise ValueError(
            f'{mpath}: corrupted manifest ("files": expected an object, got {files!r:.60})'
        )
    for name, info in files.items():
        plain = name not in ("", ".", "..") and "/" not in name and "\\" not in name
        ok = (
            isinstance(info, dict)
            and isinstance(info.get("size"), int)
            and isinstance(info.get("sha256"), str)
        )
        if not plain or not ok:
            raise ValueError(
                f"{mpath}: corrupted manifest (entry {name!r:.60}: expected a file name and "
                f'{{"size": int, "sha256": str}}, got {info!r:.60})'
            )


def read_config(directory) -> tuple[object, dict | None]:
    """-> (model config, train config dict or None) from ``directory/config.json``."""
    path = Path(directory) / "config.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected a model directory)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupted config ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(
            f"{path}: expected a JSON object (a model config with model_type), "
            f"got {type(d).__name__} {d!r:.60}"
        )
    train = d.pop("train", None)
    d.pop("quantization", None)  # read by read_quantization (a quantized model directory)
    d.pop("pruning", None)  # what prune/cli.py did (the shapes themselves are in the config)
    if train is not None and not isinstance(train, dict):
        raise ValueError(f'{path}: "train": expected an object, got {type(train).__name__}')
    try:
        return config_from_dict(d), train
    except (ValueError, TypeError, KeyError) as e:  # TypeError: e.g. "block_size": "16"
        raise ValueError(f"{path}: not a valid model config: {e}") from None


def read_quantization(directory) -> dict | None:
    """The "quantization" entry of ``directory/config.json`` (a quantized model), or None."""
    d = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    return d.get("quantization") if isinstance(d, dict) else None


def load_weights(model: torch.nn.Module, directory) -> None:
    """model.safetensors into ``model`` (ties restored by the model itself)."""
    path = Path(directory) / "model.safetensors"
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: cannot read the weights ({e})") from None
    expected = model.state_dict()
    old = sorted(k for k in tensors if OLD_GPT_ATTENTION.fullmatch(k) and k not in expected)
    if old:
        raise ValueError(
            f"{path}: {old[0]} is a GPT weight name of an older myllm101; GPT now uses GPT-2's "
            f"names: attn.c_attn holds the q_proj, k_proj and v_proj weights stacked by rows (in "
            f"that order, biases likewise) and attn.o_proj is attn.c_proj. Retrain, or load the "
            f"old tensors, rename them so and save the model again"
        )
    for key, t in tensors.items():
        if key in expected and tuple(t.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(t.shape)} in the weights but "
                f"{tuple(expected[key].shape)} in the model built from "
                f"{Path(directory) / 'config.json'}: config.json and the weights disagree"
            )
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    _, tied = unique_state_dict(model)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )


def load_training_state(directory) -> tuple[dict, dict]:
    """-> (training_state, trainer_state) of a verified checkpoint."""
    directory = Path(directory)
    verify_checkpoint(directory)
    state = torch.load(directory / "training_state.pt", map_location="cpu", weights_only=True)
    return state, json.loads((directory / "trainer_state.json").read_text())


def list_checkpoints(run_dir) -> list[Path]:
    """RUN_DIR/checkpoints/step_* oldest first (temp dirs, which start with '.', are skipped)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def newest_intact_checkpoint(run_dir) -> tuple[Path | None, list[tuple[Path, str]]]:
    """-> (the newest checkpoint that passes ``verify_checkpoint``, or None; [(each newer damaged
    checkpoint, why), newest first]). Older checkpoints are not read."""
    damaged = []
    for p in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(p)
        except (ValueError, OSError) as e:  # OSError: e.g. an unreadable file
            damaged.append((p, str(e)))
            continue
        return p, damaged
    return None, damaged


def prune_checkpoints(run_dir, keep_last: int) -> None:
    for p in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def clean_interrupted_saves(parent) -> None:
    """Tidy what a process killed mid-save leaves in ``parent`` (a directory the run owns):
    half-written ``TMP_PREFIX*`` dirs and files are deleted; an ``OLD_PREFIX NAME-*`` dir (moved
    aside just before its replacement was renamed in) is put back when NAME is missing, else
    deleted. Nothing else is touched: not complete checkpoints, not anybody else's ``.tmp-*``."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for p in sorted(parent.iterdir()):
        if p.name.startswith(TMP_PREFIX) and not p.is_symlink() and p.is_file():
            p.unlink(missing_ok=True)
        if not p.is_dir() or p.is_symlink():
            continue
        if p.name.startswith(TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(OLD_PREFIX):
            name = p.name[len(OLD_PREFIX) :].rsplit("-", 1)[0]
            if (parent / name).exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.replace(p, parent / name)


def resolve_model_dir(path) -> Path:
    """A model directory (has config.json + model.safetensors), or a run directory: its export,
    else best/, else the latest checkpoint. (``load_model`` then verifies its manifest.)"""
    path = Path(path)
    for cand in (path, path / "best", latest_checkpoint(path)):
        if (
            cand is not None
            and (cand / "config.json").exists()
            and (cand / "model.safetensors").exists()
        ):
            return cand
    raise FileNotFoundError(
        f"{path}: expected a model or run directory (config.json + model.safetensors)"
    )


def verify_model_dir(directory) -> dict:
    """``directory``'s manifest.json, checked against config.json, model.safetensors and the
    tokenizer (when there is one): a missing manifest or an altered file is a ValueError."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise ValueError(
            f"{directory} has no {MANIFEST}: not a complete myllm101 model directory (written by "
            f"an older myllm101, copied by hand, or an interrupted save), so its files cannot be "
            f"verified; a run's best/ and checkpoints/step_* directories carry their own"
        )
    return verify_checkpoint(directory, required=MODEL_FILES)


def load_model(path, device="cpu"):
    """-> (model in eval mode, tokenizer or None, model config) from a model or run directory,
    after checking every model file against the directory's manifest.json."""
    from myllm101.tokenizer.formats import FILENAME, load_tokenizer

    directory = resolve_model_dir(path)
    verify_model_dir(directory)
    model_cfg, _ = read_config(directory)
    model = load_weights_into(build_model(model_cfg), directory)
    tok = load_tokenizer(directory) if (directory / FILENAME).exists() else None
    return model.to(device).eval(), tok, model_cfg


def load_weights_into(model, directory: Path):
    """``directory``'s model.safetensors into ``model`` (built from its config.json) -> model; a
    quantized directory's modules are made first, of the right shapes (quant/quantize.py)."""
    quantization = read_quantization(directory)
    if quantization is not None:
        from myllm101.quant.quantize import (
            check_quantized_tensors,
            finish_loading,
            prepare_quantized,
        )

        prepare_quantized(model, quantization, str(directory / "config.json"))
        check_quantized_tensors(model, directory / "model.safetensors")
    load_weights(model, directory)
    if quantization is not None:
        finish_loading(model)
    return model
