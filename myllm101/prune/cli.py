"""``myllm101 prune``: prune a causal LM, optionally recover with a short fine-tune, save it.

    myllm101 prune --model smollm2|DIR --method magnitude|wanda|2:4|heads|neurons|heads+neurons
                   --sparsity 0.5 --out DIR [--scope layer|global] [--calibration-windows 16]
                   [--recover-steps 0] [--recover-method full|lora] [--recover-lr LR]
                   [--recover-rank 8] [--data-dir data/shakespeare]
        -> a model directory (config.json with a "pruning" entry, model.safetensors, tokenizer,
           manifest.json) that ``myllm101 eval`` and ``myllm101 quantize`` read like any other

magnitude / wanda / 2:4 set weights to 0 (prune/unstructured.py; the shapes stay, so a dense CPU
GEMM runs no faster); heads / neurons / heads+neurons REMOVE that fraction of each layer's GQA
groups and SwiGLU neurons (prune/structured.py; LLaMA only): smaller matmuls, a config that
records the new per-layer sizes. wanda, 2:4 and the structured methods score with input norms
over ``--calibration-windows`` windows of the corpus's train split (quant/heldout.py).

``--recover-steps N`` then fine-tunes for N steps on other train windows (prune/recover.py):
``--recover-method full`` trains every weight (lr 2e-5 by default), the pruned ones kept at exactly
0; ``lora`` trains rank-``--recover-rank`` adapters on the block Linears (lr 5e-4 by default),
merges them and applies the masks again (the merged update's entries at pruned positions are
dropped), so the saved weights have exactly the zeros pruning made. The "pruning" entry records the
method, sparsity, the measured sparsity of the block Linears, the parameter count before and after,
what the structured methods removed, and the recovery: its method, steps, lr, first and last
training losses, and the mean loss on its first 4 batches before and after (for lora also before
re-masking: what dropping the pruned positions of the update cost).
Errors print one line to stderr and return exit code 2 (cli_util.guarded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from myllm101.cli_util import guarded, run_group

UNSTRUCTURED = ("magnitude", "wanda", "2:4")
STRUCTURED = ("heads", "neurons", "heads+neurons")
METHODS = UNSTRUCTURED + STRUCTURED


def check_options(args: argparse.Namespace) -> float:
    """-> the sparsity to apply; every option checked before a model is loaded."""
    from myllm101.checks.prune import check_sparsity

    if args.method not in METHODS:
        raise ValueError(f"--method: expected one of {list(METHODS)}, got {args.method!r}")
    sparsity = args.sparsity
    if args.method == "2:4":
        if sparsity not in (None, 0.5):
            raise ValueError(f"--sparsity: 2:4 prunes exactly 0.5 (2 of every 4), got {sparsity}")
        sparsity = 0.5
    elif sparsity is None:
        raise ValueError(f"--sparsity: required for --method {args.method} (e.g. 0.5)")
    check_sparsity(sparsity)
    if args.method in STRUCTURED and args.scope != "layer":
        raise ValueError(f"--scope: the structured methods prune each layer, got {args.scope!r}")
    if args.recover_steps < 0:
        raise ValueError(f"--recover-steps: expected >= 0, got {args.recover_steps}")
    if args.recover_rank < 1:
        raise ValueError(f"--recover-rank: expected an int >= 1, got {args.recover_rank}")
    if args.recover_lr is not None and not args.recover_lr > 0:
        raise ValueError(f"--recover-lr: expected a float > 0, got {args.recover_lr}")
    if args.calibration_windows < 1:
        raise ValueError(f"--calibration-windows: expected >= 1, got {args.calibration_windows}")
    return sparsity


def block_params(model) -> int:
    """Parameters of the transformer blocks' Linears (what pruning acts on)."""
    from myllm101.prune.unstructured import block_linears

    modules = dict(model.named_modules())
    return sum(modules[n].weight.numel() for n in block_linears(model))


def cmd_prune(args: argparse.Namespace) -> int:
    from myllm101.fast.prune import sparsity_of
    from myllm101.prune.unstructured import block_linears, prune_unstructured
    from myllm101.quant.eval import load_for_output
    from myllm101.quant.heldout import calibration_batches
    from myllm101.train.checkpoint import save_model_dir

    sparsity = check_options(args)
    out = Path(args.out)
    m = load_for_output(args.model, out, args.overwrite)
    if m.quantization:
        raise ValueError(f"--model {args.model}: a quantized model; prune its float base, then "
                         f"quantize the pruned one")  # fmt: skip
    if m.cfg.model_type not in ("llama", "gpt"):
        raise ValueError(f"--model {args.model}: expected a causal LM (llama, gpt), got "
                         f"{m.cfg.model_type}")  # fmt: skip
    if args.method in STRUCTURED and m.cfg.model_type != "llama":
        raise ValueError(f"--method {args.method}: removes LLaMA heads / neurons, got a "
                         f"{m.cfg.model_type} model")  # fmt: skip
    seq = min(256, m.cfg.block_size)
    calib = None
    if args.method != "magnitude":
        calib = calibration_batches(m.tokenizer, m.cfg.vocab_size, args.calibration_windows,
                                    seq_len=seq, data_dir=args.data_dir)  # fmt: skip
    params_before = sum(p.numel() for p in m.model.parameters())
    masks, removed = None, None
    if args.method in UNSTRUCTURED:
        masks = prune_unstructured(m.model, args.method, sparsity, args.scope, calib)
    else:
        from myllm101.prune.structured import prune_structured

        heads = sparsity if "heads" in args.method else 0.0
        neurons = sparsity if "neurons" in args.method else 0.0
        removed = prune_structured(m.model, heads, neurons, calib)
    recovery = None
    if args.recover_steps:
        batches = calibration_batches(m.tokenizer, m.cfg.vocab_size, 4 * args.recover_steps,
                                      seq_len=seq, seed=1, data_dir=args.data_dir)  # fmt: skip
        recovery = run_recovery(m.model, batches, masks, args)
    base = args.model if m.directory is None else str(m.directory.resolve())
    entry = {
        "method": args.method, "sparsity": sparsity, "scope": args.scope, "base": base,
        "calibration_windows": args.calibration_windows if calib is not None else 0,
        "block_sparsity": sparsity_of(m.model, block_linears(m.model)),
        "params_before": params_before,
        "params_after": sum(p.numel() for p in m.model.parameters()),
        "removed": removed, "recovery": recovery,
    }  # fmt: skip
    tok = getattr(m.tokenizer, "bpe", m.tokenizer)  # a GGUF's: our BPE inside it
    save_model_dir(out, m.model, m.model.cfg, tok, {"pruning": entry}, list(m.extra_files))
    print(format_entry(entry, out))
    return 0


def run_recovery(model, batches: list, masks: dict | None, args: argparse.Namespace) -> dict:
    """Recover ``model`` in place as the options say -> the entry's "recovery" dict."""
    from myllm101.prune.recover import DEFAULT_LR, mean_loss, recover, recover_lora

    lr = DEFAULT_LR[args.recover_method] if args.recover_lr is None else args.recover_lr
    probe = batches[:4]  # the loss before / after, on the first (trained-on) recovery batches
    before = mean_loss(model, probe)
    out = {"method": args.recover_method, "steps": args.recover_steps, "lr": lr}
    if args.recover_method == "lora":
        r = recover_lora(model, batches, args.recover_steps, lr, masks, args.recover_rank,
                         progress=not args.no_progress, eval_batches=probe)  # fmt: skip
        losses = r.losses
        out.update(rank=args.recover_rank, loss_unmasked=r.loss_unmasked)
    else:
        losses = recover(model, batches, args.recover_steps, lr, masks,
                         progress=not args.no_progress)  # fmt: skip
    out.update(first_loss=losses[0], last_loss=losses[-1], loss_before=before,
               loss_after=mean_loss(model, probe))  # fmt: skip
    return out


def format_entry(entry: dict, out: Path) -> str:
    lines = [
        f"pruned {entry['base']} with {entry['method']} at {entry['sparsity']:g} -> {out}",
        f"  block Linears: {entry['block_sparsity']:.2%} zeros; parameters "
        f"{entry['params_before']:,} -> {entry['params_after']:,}",
    ]
    if entry["recovery"]:
        r = entry["recovery"]
        lines.append(f"  recovery ({r.get('method', 'full')}): {r['steps']} steps, training loss "
                     f"{r['first_loss']:.4f} -> {r['last_loss']:.4f}; loss on 4 recovery batches "
                     f"{r['loss_before']:.4f} -> {r['loss_after']:.4f}")  # fmt: skip
        if r.get("loss_unmasked") is not None:
            lines.append(f"  (before re-masking the merged LoRA update: {r['loss_unmasked']:.4f})")
    lines.append(f"  next: myllm101 eval --model {out}")
    return "\n".join(lines)


def add_subparsers(subparsers) -> None:
    """Add ``prune`` to an ``add_subparsers()`` object."""
    from myllm101.quant.heldout import DATA_DIR

    p = subparsers.add_parser(
        "prune", help="prune a causal LM (zeros, 2:4, or remove heads/neurons)"
    )
    p.add_argument("--model", required=True, help="smollm2 or a model/run directory")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction pruned (per layer, or of all with --scope global)")  # fmt: skip
    p.add_argument("--scope", choices=("layer", "global"), default="layer")
    p.add_argument("--out", required=True, help="the pruned model directory")
    p.add_argument("--calibration-windows", type=int, default=16)
    p.add_argument("--recover-steps", type=int, default=0,
                   help="fine-tune this many steps after pruning (0: none)")  # fmt: skip
    p.add_argument("--recover-method", choices=("full", "lora"), default="full",
                   help="full: every weight, masks kept; lora: adapters, merged, re-masked")  # fmt: skip
    p.add_argument("--recover-lr", type=float, default=None,
                   help="default 2e-5 (full) or 5e-4 (lora)")  # fmt: skip
    p.add_argument("--recover-rank", type=int, default=8, help="LoRA rank (--recover-method lora)")
    p.add_argument("--data-dir", default=str(DATA_DIR), help="the corpus splits")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=guarded(cmd_prune))


def run(argv: list[str] | None = None) -> int:
    """``myllm101 prune ...`` on its own -> exit code (tests use it)."""
    return run_group(add_subparsers, argv)


if __name__ == "__main__":
    sys.exit(run())
