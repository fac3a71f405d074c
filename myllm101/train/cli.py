"""``myllm101 train | plot | sample``: thin commands over the trainer.

    myllm101 train --config configs/gpt-shakespeare.json [--key=value ...] [--resume | --overwrite]
    myllm101 train --arch llama [--key=value ...]       (train/presets.py defaults, no file needed)
    torchrun --nproc_per_node=2 -m myllm101 train --config ... [--distributed=fsdp]  (gloo on CPU)
    myllm101 plot RUN_DIR                                              -> RUN_DIR/loss.png
    myllm101 sample --model RUN_DIR "To be" [--tokens 40 --temperature 0.8 --top-k 50]
                    (prompt + tokens must fit the context, or [--truncate left])

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
    if args.overwrite:  # (or "overwrite": true in the config file)
        cfg.overwrite = True
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
                train_samples(model, trainer.tokenizer, cfg)
        # every rank is done before any tears its process group down: gloo aborts a rank whose
        # peer left first ("terminate called without an active exception", exit -6; seen once)
        dist.barrier(trainer.dist)
    finally:
        dist.cleanup()
    return 0


def train_samples(model, tokenizer, cfg) -> None:
    """The two samples after training: sample_tokens, fewer where prompt + sample_tokens would
    not fit the context (said on stderr; the prompt is cut from the left only if it alone fills
    the context). A prompt that cannot be sampled is a warning: the run itself succeeded."""
    try:
        block, n_prompt = model.cfg.block_size, len(prompt_ids(tokenizer, cfg.sample_prompt))
        n = max(1, min(cfg.sample_tokens, block - n_prompt))
        if n < cfg.sample_tokens:
            print(f"note: sampling {n} tokens, not sample_tokens={cfg.sample_tokens}: the prompt "
                  f"({n_prompt} tokens) and the samples share block_size={block}",
                  file=sys.stderr)  # fmt: skip
        for i in range(2):
            print(sample_text(model, tokenizer, cfg.sample_prompt, n, 0.8, 50, seed=i,
                              truncate="left"))  # fmt: skip
            print("---")
    except ValueError as e:
        print(f"warning: no samples: {e}", file=sys.stderr)


def print_summary(s: dict, cfg) -> None:
    best = "n/a" if s["best_val_loss"] is None else f"{s['best_val_loss']:.4f}"
    print(
        f"done: {s['steps']} steps, {s['tokens']:,} tokens, best val loss {best}, "
        f"wall time {s['wall_time_s']:.1f}s, {s['skipped_steps']} skipped steps "
        f"({s['stop_reason']}) -> {cfg.out_dir} (loss curve: {cfg.out_dir}/loss.png)"
    )


EOT = "<|endoftext|>"


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """``prompt``'s ids (special tokens in it allowed); an empty prompt is the tokenizer's
    <|endoftext|> token (what a document starts after), or a ValueError when it has none."""
    ids = tokenizer.encode(prompt, allowed_special="all")
    if ids:
        return ids
    eot = (getattr(tokenizer, "special_tokens", None) or {}).get(EOT)
    if eot is None:
        raise ValueError(
            f"sample: the prompt is empty and the tokenizer has no {EOT} token to start from; "
            f"give a prompt"
        )
    return [eot]


def check_sample_args(n_tokens: int, temperature: float, top_k: int | None,
                      num_samples: int = 1) -> None:  # fmt: skip
    if n_tokens < 1:
        raise ValueError(f"sample: --tokens: expected >= 1, got {n_tokens}")
    if num_samples < 1:
        raise ValueError(f"sample: --num-samples: expected >= 1, got {num_samples}")
    if not temperature >= 0:  # (NaN too)
        raise ValueError(f"sample: --temperature: expected >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"sample: --top-k: expected >= 1, got {top_k}")


def sample_text(model, tokenizer, prompt: str, n_tokens: int, temperature: float, top_k: int,
                seed: int = 0, truncate: str = "none", quiet: bool = False,
                compile_step: bool = False) -> str:  # fmt: skip
    """Continue ``prompt`` by exactly ``n_tokens`` tokens (KV-cache sampling, fast/generate.py);
    decoded text. Prompt + n_tokens must fit the model's block_size, else a ValueError, unless
    ``truncate="left"``: then the prompt's first tokens are dropped, with a warning on stderr
    (not when ``quiet``). compile_step: decode through torch.compile (fast/compiled_decode.py:
    the same logits to float32 rounding, so a sampled token may rarely differ from eager's)."""
    from myllm101.fast.generate import generate

    check_sample_args(n_tokens, temperature, top_k)
    if truncate not in ("none", "left"):
        raise ValueError(f"sample: --truncate: expected 'none' or 'left', got {truncate!r}")
    block = model.cfg.block_size
    if n_tokens >= block:
        raise ValueError(
            f"sample: --tokens: expected < the model's context block_size={block} (room for the "
            f"prompt), got {n_tokens}"
        )
    ids = prompt_ids(tokenizer, prompt)
    excess = len(ids) + n_tokens - block
    if excess > 0 and truncate != "left":
        raise ValueError(
            f"sample: the prompt ({len(ids)} tokens) + --tokens {n_tokens} = {len(ids) + n_tokens} "
            f"tokens do not fit the model's context block_size={block}; shorten the prompt, "
            f"lower --tokens, or pass --truncate left to drop the prompt's first {excess} tokens"
        )
    if excess > 0 and not quiet:
        print(f"warning: sample: dropped the first {excess} of the prompt's {len(ids)} tokens to "
              f"fit block_size={block} with --tokens {n_tokens}", file=sys.stderr)  # fmt: skip
    ids = ids[max(excess, 0) :]
    was_training = model.training
    model.eval()
    try:
        out = generate(model, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed,
                       compile_step=compile_step)  # fmt: skip
    finally:
        model.train(was_training)
    return tokenizer.decode(out if prompt else out[len(ids) :])  # (not the <|endoftext|> start)


def cmd_plot(args: argparse.Namespace) -> int:
    from myllm101.train.metrics import plot_loss_curve

    run = Path(args.run_dir)
    if not (run / "metrics.jsonl").exists():
        raise ValueError(f"plot: expected a run directory with metrics.jsonl, got {str(run)!r}")
    print(plot_loss_curve(run / "metrics.jsonl", args.out or run / "loss.png"))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from myllm101.train.checkpoint import load_model

    n_tokens = args.tokens
    check_sample_args(1 if n_tokens is None else n_tokens, args.temperature, args.top_k,
                      args.num_samples)  # fmt: skip
    model, tok, mcfg = load_model(args.model)
    if tok is None:
        raise ValueError(f"sample: {args.model} holds no tokenizer (myllm101_tokenizer.json)")
    if mcfg.model_type == "bert":
        raise ValueError("sample: expected a causal LM (gpt or llama), got a bert model")
    if n_tokens is None:  # not given: 200, or what fits next to the prompt (at least 1)
        n_tokens = max(1, min(200, mcfg.block_size - len(prompt_ids(tok, args.prompt))))
    texts = []  # every sample first: an error (prompt too long) prints no partial output
    for i in range(args.num_samples):
        texts.append(sample_text(model, tok, args.prompt, n_tokens, args.temperature,
                                 args.top_k, args.seed + i, args.truncate, quiet=i > 0,
                                 compile_step=args.compile))  # fmt: skip
    for text in texts:
        print(text)
        print("---")
    return 0


def add_subparsers(sub) -> None:
    p = sub.add_parser("train", help="train a model (GPT / LLaMA / BERT) from a JSON config")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="JSON TrainConfig (see configs/)")
    src.add_argument("--arch", choices=["gpt", "llama", "bert"], default="gpt",
                     help="without --config: this architecture's pretraining defaults")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="out_dir holds a run: move it aside to OUT_DIR.replaced-<time> (never "
                        "deleted) and start over")  # fmt: skip
    p.set_defaults(func=guarded(cmd_train), overrides=[])
    p = sub.add_parser("plot", help="loss-curve PNG of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None)
    p.set_defaults(func=guarded(cmd_plot))
    p = sub.add_parser("sample", help="sample text from a trained model")
    p.add_argument("--model", required=True, help="a run or model directory")
    p.add_argument("prompt", nargs="?", default="\n")
    p.add_argument("--tokens", type=int, default=None,
                   help="new tokens per sample; prompt + tokens must fit the model's context "
                        "(default: 200, or as many as fit)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncate", choices=["none", "left"], default="none",
                   help="prompt + --tokens beyond the model's context: an error (none), or cut "
                        "the prompt from the left, with a warning (left)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="decode through torch.compile of the decode step (faster tokens after a "
                        "one-off compile of seconds to a minute; "
                        "fast/compiled_decode.py)")  # fmt: skip
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
    """``train`` / ``plot`` / ``sample`` on their own, for tests; the ``myllm101`` command (and so
    ``make demo``) reaches them through ``add_subparsers`` in myllm101/cli.py."""
    parser = argparse.ArgumentParser(prog="myllm101")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parse_args(parser, argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
