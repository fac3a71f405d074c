"""The fast-path trainer: GPT-2, LLaMA (next token) or BERT (masked LM) on token files.

One optimizer step (``Trainer.train_step``):

    for m in range(grad_accum_steps):                 # micro-batches; DDP syncs only on the last
        loss_m = model(batch(step * accum + m)).loss  # under autocast (bf16, or fp16 + GradScaler)
        (loss_m / accum).backward()
    loss not finite?  -> zero the grads, skip the step, count it (stop after max_bad_steps)
    clip the global grad norm to grad_clip; AdamW step; lr of the next step from the schedule

Divergence (``Trainer.divergence``, train/divergence.py): more than max_bad_steps non-finite
losses, a non-finite parameter, or a train or validation loss above ``divergence_loss`` (default
2 ln V + 5). The run stops at once; the diverged weights are not saved (no checkpoint, best/
untouched), only best/ is exported (train/export.py), summary.json says ``"diverged": true`` and
``fit()`` raises ``TrainingDiverged`` (a ValueError: the CLI exits 2).

Batches are a pure function of (seed, index) (see data/batches.py), the RNG state is saved with the
optimizer, so ``resume`` continues a run with exactly the losses of an uninterrupted one (CPU,
float32, same thread count); it starts from the newest intact checkpoint (damaged newer ones
are moved aside with a warning) and refuses a changed model, tokenizer, data or schedule
(train/resume.py). Every ``eval_interval`` steps: validation loss and perplexity on
``eval_batches`` fixed batches; a new best is saved to RUN_DIR/best; ``early_stopping_patience``
evaluations without one stop the run. Only rank 0 logs and writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from myllm101.config import build_model, config_from_dict, get_preset
from myllm101.data.batches import SAMPLERS, SequentialWindows
from myllm101.data.mlm import MLMBatches, bert_specials
from myllm101.device import choose_train_dtype, hardware, matmul_peak_flops
from myllm101.fast import cpu_gemm
from myllm101.fast.optim import make_adamw, param_groups
from myllm101.train import checkpoint as ckpt
from myllm101.train import distributed as dist
from myllm101.train import rundir
from myllm101.train.config import TrainConfig
from myllm101.train.divergence import default_divergence_loss, loss_divergence, params_finite
from myllm101.train.export import export_run
from myllm101.train.host_memory import reuse_freed_memory
from myllm101.train.metrics import (
    MetricsLog,
    matmul_params,
    plot_loss_curve,
    train_flops_per_token,
)
from myllm101.train.resume import check_resumable, newest_resumable
from myllm101.train.schedule import make_scheduler


class TrainingDiverged(ValueError):
    """``fit()`` stopped a run that diverged (see ``Trainer.divergence``); RUN_DIR/summary.json
    is written first (``"diverged": true``) and is also ``self.summary``. A ValueError, so the
    CLI reports it in one line and exits 2."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


def resolve_model_config(spec: dict, vocab_needed: int, seq_len: int, pad_id: int | None = None):
    """The model config of ``spec`` ({"preset": name, ...} or {"model_type": ...}); a missing
    vocab_size is ``vocab_needed`` (the tokenizer's, plus BERT's 4 specials)."""
    d = dict(spec)
    preset = d.pop("preset", None)
    explicit_vocab = "vocab_size" in d
    if preset is not None:
        d = {**get_preset(preset).to_dict(), **d}
    if not explicit_vocab:
        d["vocab_size"] = vocab_needed
    if d.get("model_type") == "bert" and pad_id is not None:
        d["pad_token_id"] = pad_id
    cfg = config_from_dict(d)
    if cfg.vocab_size < vocab_needed:
        raise ValueError(
            f"model.vocab_size: expected >= {vocab_needed} (the tokenizer's ids), got {cfg.vocab_size}"
        )
    if cfg.block_size < seq_len:
        raise ValueError(f"seq_len: expected <= model.block_size={cfg.block_size}, got {seq_len}")
    return cfg


def _boundary_ids(tokenizer) -> list[int]:
    """Ids whose bytes hold a blank line: where BERT segments (paragraphs, speeches) end."""
    out = []
    for t, i in tokenizer.mergeable_ranks.items():
        if b"\n\n" in t:
            out.append(i)
    return out


class Trainer:
    """``Trainer(cfg).fit()`` -> summary dict. ``train_tokens``/``val_tokens`` (1-D arrays) and
    ``tokenizer`` may be given directly (tests); otherwise they come from cfg's text files."""

    def __init__(self, cfg: TrainConfig, train_tokens=None, val_tokens=None, tokenizer=None,
                 resume: bool = False):  # fmt: skip
        self.cfg, self.resume = cfg, resume
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        dev = (
            cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        if dev == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "device: expected 'cpu' or 'auto' on a machine without CUDA, got 'cuda'"
            )
        self.dist = dist.setup(dev)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if dev == "cuda" else "cpu")
        self.out_dir = Path(cfg.out_dir)
        self._setup_precision()
        self.tokenizer = tokenizer
        train_tokens, val_tokens = self._load_tokens(train_tokens, val_tokens)
        self._setup_model_and_data(train_tokens, val_tokens)
        self.history: list[dict] = []  # every step's record (also in metrics.jsonl)

    # ---- set-up ----
    def _setup_precision(self) -> None:
        cfg, cuda = self.cfg, self.device.type == "cuda"
        # auto: bf16 autocast only where bf16 is native (else float32 on CPU), see device.py
        self.precision = choose_train_dtype(cfg.dtype, self.device)
        self.hardware = hardware().summary()  # for the log and summary.json
        kind = self.precision.value
        if kind == "fp16" and not cuda:
            raise ValueError("dtype: fp16 (with GradScaler) needs CUDA; on CPU use bf16 or float32")
        self.dtype_kind = kind
        self.param_dtype = torch.float64 if kind == "float64" else torch.float32
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kind)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=kind == "fp16")

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _load_tokens(self, train_tokens, val_tokens):
        if train_tokens is not None:
            return np.asarray(train_tokens), np.asarray(
                val_tokens if val_tokens is not None else train_tokens
            )
        from myllm101.data.tokens import tokenize_splits
        from myllm101.tokenizer.pretrained import load_any

        cfg = self.cfg
        self.tokenizer = (
            load_any(cfg.tokenizer, "fast") if self.tokenizer is None else self.tokenizer
        )
        tokens_dir = cfg.tokens_dir or (
            str(Path(cfg.tokenizer) / "tokens") if Path(cfg.tokenizer).is_dir()
            else f"runs/tokens/{cfg.tokenizer}"
        )  # fmt: skip
        if self.dist.is_main:  # rank 0 encodes; the others wait and then read the files
            tokenize_splits(
                cfg.data_dir, self.tokenizer, tokens_dir, ("train", "val"), cfg.progress
            )
        dist.barrier(self.dist)
        files = tokenize_splits(cfg.data_dir, self.tokenizer, tokens_dir, ("train", "val"), False)
        return files["train"].tokens, files["val"].tokens

    def _setup_model_and_data(self, train_tokens, val_tokens) -> None:
        cfg, d = self.cfg, self.dist
        n_vocab = (
            self.tokenizer.n_vocab if self.tokenizer is not None else int(train_tokens.max()) + 1
        )
        is_bert = cfg.model.get("model_type") == "bert" or str(
            cfg.model.get("preset", "")
        ).startswith(("bert", "minilm"))
        common = dict(seed=cfg.seed, rank=d.rank, world_size=d.world_size, device=self.device)
        if is_bert:
            sp = bert_specials(n_vocab)
            self.model_cfg = resolve_model_config(cfg.model, n_vocab + 4, cfg.seq_len, sp.pad)
            bounds = _boundary_ids(self.tokenizer) if self.tokenizer is not None else None
            mk = lambda toks, bucket: MLMBatches(
                toks, cfg.seq_len, cfg.batch_size, sp, n_vocab, boundary_ids=bounds,
                mlm_probability=cfg.mlm_probability, bucket=bucket, **common)  # fmt: skip
            self.train_data = mk(train_tokens, cfg.bucket_by_length)
            self.val_data = mk(val_tokens, False)
        else:
            self.model_cfg = resolve_model_config(cfg.model, n_vocab, cfg.seq_len)
            sampler = SAMPLERS[cfg.sampler]
            self.train_data = sampler(train_tokens, cfg.seq_len, cfg.batch_size, **common)
            self.val_data = SequentialWindows(
                val_tokens, cfg.seq_len, cfg.batch_size, shuffle=False, **common
            )
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        model = build_model(self.model_cfg).to(device=self.device, dtype=self.param_dtype)
        model.gradient_checkpointing = cfg.gradient_checkpointing
        self.model = model  # the plain module: what checkpoints hold
        self.n_params = model.num_parameters()
        self.n_matmul = matmul_params(model)  # for the MFU estimate
        self.optimizer = make_adamw(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                    betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)  # fmt: skip
        self.scheduler = make_scheduler(self.optimizer, cfg.lr, cfg.min_lr, cfg.warmup_steps,
                                        cfg.max_steps, cfg.schedule)  # fmt: skip
        self.wrapped = dist.wrap(model, d, cfg.distributed, self.device)
        if cfg.distributed == "fsdp" and d.enabled:  # FSDP owns the parameters now
            self.optimizer = make_adamw(param_groups(self.wrapped, cfg.weight_decay), lr=cfg.lr,
                                        betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)  # fmt: skip
            self.scheduler = make_scheduler(self.optimizer, cfg.lr, cfg.min_lr, cfg.warmup_steps,
                                            cfg.max_steps, cfg.schedule)  # fmt: skip
        self.forward = torch.compile(self.wrapped) if cfg.compile else self.wrapped
        self.step = 0
        self.tokens_seen = 0
        self.best_val = math.inf
        self.bad_steps = 0
        self.evals_since_best = 0
        self.elapsed_before = 0.0

    def batch(self, index: int, val: bool = False) -> dict:
        b = (self.val_data if val else self.train_data).batch(index)
        return b if isinstance(b, dict) else {"input_ids": b, "labels": b}

    # ---- one step ----
    def train_step(self) -> dict:
        cfg, accum = self.cfg, self.cfg.grad_accum_steps
        self.wrapped.train()
        total, n_tokens = torch.zeros((), device=self.device, dtype=torch.float64), 0
        for m in range(accum):
            b = self.batch(self.step * accum + m)
            sync_now = m == accum - 1
            ctx = contextlib.nullcontext() if sync_now else dist.no_sync(self.wrapped)
            with ctx:
                with self.autocast():
                    loss = self.forward(**b).loss
                self.scaler.scale(loss / accum).backward()
            total += loss.detach().double() / accum
            n_tokens += (
                int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
            )
        loss = float(dist.mean(total, self.dist))
        rec = {"step": self.step + 1, "loss": loss, "lr": self.scheduler.get_last_lr()[0]}
        params = [p for p in self.wrapped.parameters() if p.requires_grad]
        skip = not math.isfinite(loss)
        if not skip and cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = float(dist.clip_grad_norm(params, cfg.grad_clip))
            rec["grad_norm"] = norm
            skip = not math.isfinite(norm) and not self.scaler.is_enabled()
        if skip:
            self.bad_steps += 1
            rec["event"] = "non_finite_loss"
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.tokens_seen += n_tokens * self.dist.world_size
        rec["tokens"] = self.tokens_seen
        return rec

    @torch.no_grad()
    def evaluate(self, n_batches: int | None = None) -> float:
        """Mean val loss over the first ``n_batches`` (default cfg.eval_batches) fixed batches."""
        n = n_batches or self.cfg.eval_batches
        self.wrapped.eval()
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(n):
            with self.autocast():
                total += self.forward(**self.batch(i, val=True)).loss.double()
        return float(dist.mean(total / n, self.dist))

    # ---- divergence (train/divergence.py) ----
    @property
    def divergence_loss(self) -> float:
        """cfg.divergence_loss, by default 2 ln V + 5 (divergence.default_divergence_loss)."""
        d = self.cfg.divergence_loss
        return d if d is not None else default_divergence_loss(self.model_cfg.vocab_size)

    def divergence(self, rec: dict) -> str | None:
        """Why the run diverged after the step ``rec``, or None: too many non-finite losses, a
        training loss above ``divergence_loss``, or a non-finite parameter after the step."""
        cfg, step = self.cfg, rec["step"]
        if self.bad_steps > cfg.max_bad_steps:
            return f"non-finite loss in {self.bad_steps} steps (max_bad_steps={cfg.max_bad_steps})"
        if math.isfinite(rec["loss"]):  # (a non-finite one was skipped and counted above)
            why = self.loss_divergence("training", rec["loss"], step)
            if why:
                return why
        if not params_finite(self.wrapped, self.dist, self.device):
            return f"non-finite parameters after step {step}"
        return None

    def loss_divergence(self, what: str, loss: float, step: int | None = None) -> str | None:
        """Why ``loss`` (measured at ``step``, default self.step) means divergence, or None."""
        return loss_divergence(
            what, loss, self.step if step is None else step, self.divergence_loss
        )

    # ---- checkpoints ----
    def training_state(self) -> dict:
        state = {
            "optimizer": dist.full_optimizer_state(self.wrapped, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def trainer_state(self) -> dict:
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "best_val_loss": self.best_val,
            "bad_steps": self.bad_steps, "evals_since_best": self.evals_since_best,
            "elapsed_s": self.elapsed_before + time.perf_counter() - self.t0,
            "world_size": self.dist.world_size,
            "cpu_gemm": cpu_gemm.choices(),  # the GEMM libraries chosen: a resume keeps them
        }  # fmt: skip

    def _model_to_save(self):
        if dist.is_sharded(self.wrapped):
            sd = dist.full_state_dict(self.wrapped)  # every rank takes part in the gather
            if not self.dist.is_main:
                return None
            m = build_model(self.model_cfg).to(self.param_dtype)
            m.load_state_dict(sd)
            return m
        return self.model

    def save(self, directory: Path) -> None:
        model = self._model_to_save()
        state = self.training_state()  # under FSDP a collective too: every rank calls it
        if self.dist.is_main:
            ckpt.save_checkpoint(directory, model, self.model_cfg, self.cfg.to_dict(),
                                 state, self.trainer_state(), self.tokenizer)  # fmt: skip
        dist.barrier(self.dist)

    def load(self, directory: Path) -> None:
        check_resumable(directory, self.model_cfg, self.tokenizer, self.cfg)
        state, tstate = ckpt.load_training_state(directory)
        plain = build_model(self.model_cfg).to(self.param_dtype)
        ckpt.load_weights(plain, directory)
        dist.load_full_state(self.wrapped, self.optimizer, plain.state_dict(), state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step, self.tokens_seen = tstate["step"], tstate["tokens_seen"]
        self.best_val, self.bad_steps = tstate["best_val_loss"], tstate["bad_steps"]
        self.evals_since_best, self.elapsed_before = tstate["evals_since_best"], tstate["elapsed_s"]
        cpu_gemm.restore_choices(tstate.get("cpu_gemm", {}))  # absent in older checkpoints

    # ---- the loop ----
    def fit(self) -> dict:
        """Train; -> the summary. The main rank holds out_dir's lock (train/rundir.py) from its
        first check to the last file written, released however ``_fit`` ends."""
        lock = self._claim_out_dir()
        try:
            return self._fit()
        finally:
            if lock is not None:
                lock.release()

    def _claim_out_dir(self) -> rundir.RunLock | None:
        """Main rank: out_dir must be new, empty, or a run continued (resume) or moved aside
        (cfg.overwrite), and not in use (rundir.claim_run_dir); then, holding its lock, tidy what
        a save killed midway left there. Every rank raises if that failed."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                lock = rundir.claim_run_dir(self.out_dir, self.resume, self.cfg.overwrite)
                # a run killed while saving left a temp dir (or a moved-aside "best"): only our
                # own prefixed names, and only in the directory this run now owns
                ckpt.clean_interrupted_saves(self.out_dir / "checkpoints")
                ckpt.clean_interrupted_saves(self.out_dir)
            except Exception as e:
                if lock is not None:
                    lock.release()
                lock, error = None, e
        if dist.any_rank(error is not None, self.dist, self.device):
            if error is not None:
                raise error
            raise ValueError(f"out_dir: rank 0 refused {self.out_dir} (see its error)")
        return lock

    def _fit(self) -> dict:
        cfg, main = self.cfg, self.dist.is_main
        self.host_malloc = reuse_freed_memory()  # each step reuses freed pages (host_memory.py)
        self.t0 = time.perf_counter()
        dist.barrier(self.dist)
        if self.resume:
            last = newest_resumable(self.out_dir, self.dist)
            self.load(last)
            if main:
                print(f"resuming from {last} (step {self.step})", file=sys.stderr)
        log = MetricsLog(self.out_dir / "metrics.jsonl", main, self.step if self.resume else None)
        log.log({"step": self.step, "event": "precision", "dtype": self.dtype_kind,
                 "reason": self.precision.reason, "hardware": self.hardware,
                 "host_malloc": self.host_malloc})  # fmt: skip
        if main and cfg.progress:
            print(f"precision: {self.dtype_kind} ({self.precision.reason}); "
                  f"{self.hardware}; host malloc: {self.host_malloc}", file=sys.stderr)  # fmt: skip
        peak = matmul_peak_flops(self.device, self.autocast_dtype or self.param_dtype)
        mc = self.model_cfg
        flops_per_token = train_flops_per_token(self.n_matmul, mc.n_layer, mc.n_embd, cfg.seq_len)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not (main and cfg.progress), file=sys.stderr)  # fmt: skip
        reason, last_val, diverged = "max_steps", None, None
        t_window, tok_window = time.perf_counter(), self.tokens_seen

        def diverge(why: str, rec: dict | None = None) -> str:
            # these weights are never saved; the loop stops at once (no eval, no checkpoint)
            log.log({**(rec or {"step": self.step}), "event": "diverged", "reason": why})
            if main:
                bar.write(f"step {self.step}: diverged: {why}")
            return why

        while self.step < cfg.max_steps:
            rec = self.train_step()
            self.history.append(rec)
            if "event" in rec:
                log.log(rec)
                if main:
                    bar.write(
                        f"step {rec['step']}: non-finite loss {rec['loss']}, step skipped ({self.bad_steps}/{cfg.max_bad_steps})"
                    )
            why = self.divergence(rec)
            if why:
                diverged = diverge(why, None if "event" in rec else rec)
                break
            if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                dt = time.perf_counter() - t_window
                tok_s = (self.tokens_seen - tok_window) / max(dt, 1e-9)
                t_window, tok_window = time.perf_counter(), self.tokens_seen
                rec.update(tok_per_s=tok_s, mfu=flops_per_token * tok_s / peak,
                           time_s=self.elapsed_before + time.perf_counter() - self.t0)  # fmt: skip
                if "event" not in rec:
                    log.log(rec)
                bar.set_postfix(
                    loss=f"{rec['loss']:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{rec['mfu']:.1%}"
                )
            bar.update(1)
            stop = False
            elapsed = time.perf_counter() - self.t0
            if dist.any_rank(
                bool(cfg.max_time_s) and elapsed >= cfg.max_time_s, self.dist, self.device
            ):  # out of time: evaluate and save this step, then stop
                reason, stop = f"time budget max_time_s={cfg.max_time_s:g}", True
            if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps or stop:
                last_val = self.evaluate()
                log.log(
                    {
                        "step": self.step,
                        "val_loss": last_val,
                        "val_ppl": math.exp(min(last_val, 50)),
                    }
                )
                if main:
                    bar.write(
                        f"step {self.step}: val loss {last_val:.4f}, ppl {math.exp(min(last_val, 50)):.2f}"
                    )
                why = self.loss_divergence("validation", last_val)
                if why:
                    diverged = diverge(why)
                    break
                if last_val < self.best_val:  # finite here: best/ only ever holds a finite loss
                    self.best_val, self.evals_since_best = last_val, 0
                    self.save(self.out_dir / "best")
                else:
                    self.evals_since_best += 1
                    if (
                        cfg.early_stopping_patience
                        and self.evals_since_best >= cfg.early_stopping_patience
                    ):
                        reason, stop = (
                            f"early stopping: no better val loss in {self.evals_since_best} evals",
                            True,
                        )
            if self.step % cfg.save_interval == 0 or stop or self.step == cfg.max_steps:
                if self.step % cfg.eval_interval and not stop and self.step != cfg.max_steps:
                    # not evaluated at this step: one val batch checks the weights before saving
                    why = self.loss_divergence("validation (1 batch, before saving)",
                                               self.evaluate(n_batches=1))  # fmt: skip
                    if why:
                        diverged = diverge(why)
                        break
                self.save(self.out_dir / "checkpoints" / f"step_{self.step:07d}")
                if main:
                    ckpt.prune_checkpoints(self.out_dir, cfg.keep_last)
            if stop:
                break
        bar.close()
        if diverged:
            reason = f"diverged: {diverged}"
        summary = {
            "steps": self.step,
            "tokens": self.tokens_seen,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "last_val_loss": last_val,
            "skipped_steps": self.bad_steps,
            "wall_time_s": round(self.elapsed_before + time.perf_counter() - self.t0, 2),
            "diverged": diverged is not None,
            "stop_reason": reason,
            "parameters": self.n_params,
            "dtype": self.dtype_kind,
            "dtype_reason": self.precision.reason,
            "hardware": self.hardware,
            "cpu_gemm": cpu_gemm.choices(),  # which library ran each float32 GEMM shape
            "host_malloc": self.host_malloc,  # freed memory kept for reuse, or why not
        }
        has_best = (self.out_dir / "best").is_dir()
        if main:
            if not diverged or has_best:  # diverged: export best/ (a finite val loss) or nothing
                export_run(self.out_dir)
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            try:
                plot_loss_curve(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")
            except ValueError:
                pass
        if diverged:
            kept = "best/ kept and exported" if has_best else "nothing exported (no best/)"
            raise TrainingDiverged(
                f"training diverged at step {self.step}: {diverged}; the diverged weights were "
                f"not saved, {kept}; see {self.out_dir / 'summary.json'}",
                summary,
            )
        return summary
