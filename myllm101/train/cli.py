"""``myllm101 train | plot | sample``: thin commands over the trainer.

    myllm101 train --config configs/gpt-shakespeare.json [--key=value ...] [--resume]
    myllm101 train --arch llama [--key=value ...]       (train/presets.py defaults, no file needed)
    torchrun --nproc_per_node=2 -m myllm101 train --config ... [--distributed=fsdp]  (gloo on CPU)
    myllm101 plot RUN_DIR                                              -> RUN_DIR/loss.png
    myllm101 sample --model RUN_DIR "To be" [--tokens 200 --temperature 0.8 --top-k 50]

``add_subparsers(subparsers)`` hooks these into the main parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from myllm101.cli_util import guarded


def cmd_train(args: argparse.Namespace) -> int:
    from myllm101.train import TrainConfig, Trainer
    from myllm101.train import distributed as dist
    from myllm101.train.checkpoint import load_model
    from myllm101.train.config import apply_overrides

    unknown = [a for a in args.overrides if not a.startswith("--")]
    if unknown:
        raise ValueError(f"train: expected --key=value overrides, got {unknown}")
    if args.config is None:
        from myllm101.train.presets import PRETRAIN

        cfg = TrainConfig.from_dict(apply_overrides(PRETRAIN[args.arch], args.overrides))
    else:
        cfg = TrainConfig.from_file(args.config, args.overrides)
    trainer = Trainer(cfg, resume=args.resume)
    try:
        summary = trainer.fit()
        if trainer.dist.is_main:
            print_summary(summary, cfg)
            if cfg.sample_tokens and trainer.model_cfg.model_type != "bert":
                # FSDP's sharded model needs every rank for a forward: sample the saved export
                model = trainer.model
                if dist.is_sharded(trainer.wrapped):
                    model = load_model(cfg.out_dir)[0].to(trainer.device)
                print("--- samples ---")
                for i in range(2):
                    text = sample_text(model, trainer.tokenizer, cfg.sample_prompt,
                                       cfg.sample_tokens, 0.8, 50, seed=i)  # fmt: skip
                    print(text)
                    print("---")
    finally:
        dist.cleanup()
    return 0


def print_summary(s: dict, cfg) -> None:
    best = "n/a" if s["best_val_loss"] is None else f"{s['best_val_loss']:.4f}"
    print(
        f"done: {s['steps']} steps, {s['tokens']:,} tokens, best val loss {best}, "
        f"wall time {s['wall_time_s']:.1f}s, {s['skipped_steps']} skipped steps "
        f"({s['stop_reason']}) -> {cfg.out_dir} (loss curve: {cfg.out_dir}/loss.png)"
    )


def sample_text(model, tokenizer, prompt: str, n_tokens: int, temperature: float, top_k: int,
                seed: int = 0) -> str:  # fmt: skip
    """Continue ``prompt`` (KV-cache sampling, fast/generate.py); decoded text."""
    from myllm101.fast.generate import generate

    ids = tokenizer.encode(prompt, allowed_special="all") or [0]
    block = model.cfg.block_size
    n_tokens = min(n_tokens, block - min(len(ids), block - 1))
    ids = ids[-(block - n_tokens) :]
    was_training = model.training
    model.eval()
    try:
        out = generate(model, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed)
    finally:
        model.train(was_training)
    return tokenizer.decode(out)


def cmd_plot(args: argparse.Namespace) -> int:
    from myllm101.train.metrics import plot_loss_curve

    run = Path(args.run_dir)
    if not (run / "metrics.jsonl").exists():
        raise ValueError(f"plot: expected a run directory with metrics.jsonl, got {str(run)!r}")
    print(plot_loss_curve(run / "metrics.jsonl", args.out or run / "loss.png"))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from myllm101.train.checkpoint import load_model

    model, tok, mcfg = load_model(args.model)
    if tok is None:
        raise ValueError(f"sample: {args.model} holds no tokenizer (myllm101_tokenizer.json)")
    if mcfg.model_type == "bert":
        raise ValueError("sample: expected a causal LM (gpt or llama), got a bert model")
    for i in range(args.num_samples):
        print(
            sample_text(
                model, tok, args.prompt, args.tokens, args.temperature, args.top_k, args.seed + i
            )
        )
        print("---")
    return 0


def add_subparsers(sub) -> None:
    p = sub.add_parser("train", help="train a model (GPT / LLaMA / BERT) from a JSON config")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="JSON TrainConfig (see configs/)")
    src.add_argument("--arch", choices=["gpt", "llama", "bert"], default="gpt",
                     help="without --config: this architecture's pretraining defaults")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.set_defaults(func=guarded(cmd_train), overrides=[])
    p = sub.add_parser("plot", help="loss-curve PNG of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None)
    p.set_defaults(func=guarded(cmd_plot))
    p = sub.add_parser("sample", help="sample text from a trained model")
    p.add_argument("--model", required=True, help="a run or model directory")
    p.add_argument("prompt", nargs="?", default="\n")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=guarded(cmd_sample))


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """parse_known_args, letting only ``train`` keep the extra --key=value overrides."""
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "command", None) == "train":
        args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> int:
    """These commands on their own (tests, and `make demo` until cli.py wires them in)."""
    parser = argparse.ArgumentParser(prog="myllm101")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parse_args(parser, argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
