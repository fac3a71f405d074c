"""A compiled decode step: ``torch.compile`` of a model's ``decode_step`` over a static cache.

``generate(..., compile_step=True)`` decodes through ``compiled_decoder(model)``: the same
logits as ``model.decode_step`` to float32 rounding (Inductor's GEMMs and fused ops may sum in
another order), in one compiled graph per (batch, cache length) shape.

Why a static cache: torch.compile specialises on shapes, and the eager step's keys grow by one
slot per token (``KVCache.update`` returns the filled slots), which would recompile every step.
Here the new key and value are written at slot L with ``index_copy_`` (L a tensor, not a Python
int) and the query attends over all ``max_len`` slots, the empty ones hidden by the mask, so
every step runs the same graph. The cache length is rounded up to a multiple of ``BUCKET``
(capped at the model's block_size), so prompts and ``max_new_tokens`` of similar sizes share a
graph; the extra slots cost one masked dot product each.

Why freezing, autotuning and the C++ wrapper (Inductor's ``freezing``, ``max_autotune`` and
``cpp_wrapper``): freezing treats the weights as constants, so each Linear's weight is packed once
for the GEMM that runs it, and the layers' small ops fuse around the GEMMs; autotuning times, per
GEMM shape, Inductor's C++ GEMM template (vectorised micro-kernels generated for that shape)
against the library GEMM and keeps the faster; the C++ wrapper calls the step's few hundred
kernels from compiled C++ instead of Python, which saved ~3-5 ms of a ~21 ms fp32 step. Measured
on SmolLM2-135M fp32, 64 tokens after a 16-token prompt, through ``generate`` (2-core AMD EPYC,
AVX-512; one process, runs alternating; the VM's speed moves by 10-20% from hour to hour):

    eager decode_step, fused projections          18-19 tokens/s
    compiled, freezing only (MKL's packed GEMM)    27-28
    compiled over fast/prepack.py's oneDNN weights 30-31
    compiled, freezing + autotune                  42-47   (tokens identical to eager)
    the same with the C++ wrapper                  55-58   (tokens identical to eager)
    bf16 weights: eager 32, compiled (no C++ wrapper) 64

Why only Inductor's C++ GEMMs (``max_autotune_gemm_backends="CPP"``): autotuning times each
GEMM alone, its weight already in cache after the first run, where ATen's kernels can look as
fast as Inductor's C++ template; in the step every weight streams from memory once. With AVX2
kernels (SmolLM2 int8, ``ATEN_CPU_CAPABILITY=avx2`` on the AVX-512 machine) autotuning kept
ATen's ``_weight_int8pack_mm`` for the gate/up and down projections, which then read their
weights at ~9 GB/s against the template's ~34 GB/s (profiled: 8.8 ms of a ~14 ms step); the
template alone decoded at 99.4 tokens/s against 73.1 (1.36x; one process, the two compiled
models alternating 8 times, the same greedy tokens). Everywhere else tried, autotuning picked
the template for every SmolLM2 GEMM already, so nothing changes (all backends / template only,
tokens/s, measured the same way): AVX-512 fp32 46.3 / 45.9, int8 106.8 / 106.9 (and bf16
weights: the template for every shape); AVX2 kernels fp32 41.7 / 41.8, int4-g64 54.8 / 54.1.

A GEMM the template cannot run makes Inductor fail ("No choices to select"); the decoder then
compiles again with every backend. ``MYLLM101_COMPILE_CPP_GEMMS=0`` lets autotuning choose.

benchmarks/test_decode.py has the same-run rows against transformers and the bandwidth bound.

Costs, so it is opt-in:
- the first step compiles and autotunes (~80 s for SmolLM2 on 2 cores, ~20-40 s for a tiny
  model), and again for each new (batch size, cache bucket); ``MYLLM101_COMPILE_AUTOTUNE=0`` skips
  the autotuning (compiles in about half the time, decodes at the freezing-only speed),
  ``MYLLM101_COMPILE_CPP_WRAPPER=0`` keeps Inductor's Python wrapper;
- frozen weights are baked in: the decoder checks every parameter's and buffer's version, and
  every module's plain attributes, once per ``generate`` and recompiles when one changed (a
  training step, ``load_state_dict``, a new eps); the graph itself skips Dynamo's per-step
  guards on the model's modules (``GUARDS``), so a change in the middle of a ``generate`` is
  not seen;
- the packed copy of the weights is held beside the model's own (memory x2).

8-bit models. An Int8Linear's fbgemm packed weight is a Python object a graph cannot hold;
traced as it is, the layer took its generic path, which freezing turned into float32 weights
(SmolLM2 int8: 27 tokens/s compiled against 57 eager). ``register_for_compile`` (fast/int8.py)
therefore chooses, per layer, what the graph runs:
- weight-only layers, when autotuning (the default) and the width is a multiple of 16:
  ``int8_linear_bf16_activations``, ``torch._weight_int8pack_mm`` on activations rounded to
  bf16, which autotuning replaces by a C++ GEMM reading the int8 codes at 1 byte per weight
  (fbgemm's kernel reads a 2-byte fp16 copy). SmolLM2 int8 then decodes at 87-90 tokens/s, 97-119
  with the C++ wrapper (111 in QUANT.md), against ~48 eager; greedy tokens equalled eager's here,
  but the two bf16 roundings per layer (2**-9 relative) are a different computation from eager's
  float32 activations, so no test asserts equal tokens. ``MYLLM101_COMPILE_INT8_BF16=0`` keeps
  the float32 activations (next point);
- the others (w8a8, and weight-only without autotuning): the packed fbgemm kernel as one opaque
  custom op given a handle, the small ops around it fused (same tokens as eager, and not
  reliably faster: 42-63 tokens/s for SmolLM2 weight-only; the custom op adds ~10 us a call).
int4 layers (fast/int4.py's ``register_for_compile``) run torch's int4pack kernel in the graph,
its layout built there from the buffers and folded to a constant by freezing; autotuning turns it
into Inductor's int4 weight-only C++ GEMM (SmolLM2 int4-g64: 60.9 tokens/s against 28 eager in
QUANT.md; the kernel choice is made outside the graph, as a CPU feature query inside it broke the
graph at every layer and ran no faster than eager). A ``fast/prepack.py`` model is refused: its
oneDNN weights compile, but cannot be autotuned (31 against 47 tokens/s); ``unpack`` it first.
"""

from __future__ import annotations

import inspect
import itertools
import os
import types
import weakref

import torch
from torch import nn

from myllm101.fast import int4, int8
from myllm101.fast.prepack import PackedLinear

BUCKET = 256  # cache slots are allocated in multiples of this many (see the module docstring)
CPP_GEMMS = "CPP"  # Inductor's GEMM backends when autotuning (see the module docstring)
# No guards on the model's modules: checking them before every step took ~0.6 ms of a ~9 ms int8
# step (SmolLM2: 123.5 -> 133.6 tokens/s without them, one process, alternating). What they
# would catch, a changed weight, module or plain attribute, ``refresh`` checks once per generate.
GUARDS = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
_COMPILES = itertools.count()


def cache_slots(total: int, block_size: int) -> int:
    """The static cache's length for ``total`` tokens: rounded up to a multiple of BUCKET,
    never past block_size (which total itself never exceeds)."""
    return min(-(-total // BUCKET) * BUCKET, max(block_size, total))


class StaticCache:
    """A prefilled ``KVCache`` moved to one buffer per layer: k[i], v[i] (B, Hkv, max_len, D),
    ``length`` slots filled. Separate buffers, because Inductor turns an in-place write into a
    view of one big (n_layer, ...) buffer into a copy of the whole buffer, per layer and step
    (SmolLM2, 256 slots: ~0.35 GB a token; the step ran at 19 tokens/s instead of 29)."""

    def __init__(self, cache):
        self.k = [t.clone() for t in cache.k.unbind(0)]
        self.v = [t.clone() for t in cache.v.unbind(0)]
        self.length = cache.length
        cache.k = cache.v = None  # the copies replace it (cache.length is left as it was)


class SlotCache:
    """What one compiled step's layers write: ``update`` has ``KVCache.update``'s signature but
    writes slot ``slot`` (1,) long of layer i's buffers in place and returns every slot (the
    mask hides the empty ones), so shapes never change."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], slot: torch.Tensor):
        self.k, self.v, self.slot = k, v, slot

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, H, 1, D) -> every slot of this layer, (B, H, max_len, D) each."""
        k_all, v_all = self.k[layer], self.v[layer]
        H = k.shape[1]  # a layer with kv heads pruned uses the first H (as KVCache.update)
        if H < k_all.shape[1]:
            k_all, v_all = k_all[:, :H], v_all[:, :H]
        k_all.index_copy_(2, self.slot, k.to(k_all.dtype))
        v_all.index_copy_(2, self.slot, v.to(v_all.dtype))
        return k_all.to(k.dtype), v_all.to(v.dtype)

    def advance(self, n_tokens: int) -> None:
        """Nothing: the caller counts outside the compiled graph (a Python counter changed inside
        it would be guarded on, and recompile every step)."""


def static_decode_step(
    model: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    visible: torch.Tensor,
    slot: torch.Tensor,
    k: list[torch.Tensor],
    v: list[torch.Tensor],
) -> torch.Tensor:
    """``model.decode_step`` on a static cache: input_ids, position_ids (B, 1); visible (B, S)
    bool, the slots the new token may see (itself included, padding and empty slots not); slot
    (1,) long; k, v a StaticCache's buffers -> logits (B, V). What ``CompiledDecoder`` compiles;
    eager, it is the reference for the compiled one."""
    # decode_step without its inference_mode decorator: the caller is in inference mode already,
    # and a mode switch traced into the graph breaks freezing ("Cannot set version_counter")
    step = inspect.unwrap(type(model).decode_step)
    return step(model, input_ids, SlotCache(k, v, slot), position_ids, visible)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """A copy of x with the standard (row-major) strides."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)


_PLAIN = (bool, int, float, str, type(None))


def _model_version(model: nn.Module) -> tuple:
    """What a compiled step depends on: each parameter's and buffer's identity and version
    (frozen weights are constants in the graph), and every module's identity and plain
    attributes (eps, head counts, kernel choices...), which the graph's guards do not check
    (see ``GUARDS``)."""
    tensors = [*model.parameters(), *model.buffers()]
    modules = tuple(
        (id(m), tuple((k, v) for k, v in vars(m).items() if type(v) in _PLAIN))
        for m in model.modules()
    )
    return tuple((id(t), t._version) for t in tensors), modules


def _no_gemm_choice(error: BaseException | None) -> bool:
    """Did Inductor fail because no allowed backend could run a GEMM ("No choices to select")?"""
    while error is not None:
        if "No choices to select" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def check_compilable(model: nn.Module) -> None:
    """Refuse what the compiled step cannot run well: no decode_step, or a PackedLinear."""
    if not hasattr(model, "decode_step"):
        raise ValueError(
            f"compile_step: expected a model with a decode_step (fast GPT or Llama), "
            f"got {type(model).__name__}"
        )
    for name, module in model.named_modules():
        if isinstance(module, PackedLinear):
            raise ValueError(
                f"compile_step: {name} is a PackedLinear (fast/prepack.py), which the compiled "
                "step cannot autotune (slower than compiling the float weights); unpack(model) "
                "first: compiling packs the weights itself"
            )


def _own_code(fn, name: str):
    """fn with a code object of its own. Dynamo keeps compiled graphs (and their guards) per code
    object, and the guards cannot see frozen weights change in place: a fresh code object per
    compile is what makes a recompile start clean, and keeps one model's graphs (up to Dynamo's
    recompile limit) from counting against another's."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


class CompiledDecoder:
    """A model's compiled static decode step (see the module docstring). Call it like
    ``model.decode_step`` with the static inputs; ``refresh()`` once per generation."""

    def __init__(self, model: nn.Module):
        check_compilable(model)
        self.model = weakref.ref(model)  # the registry below must not keep the model alive
        self.version: tuple | None = None
        self.step = None
        self.autotune = self.cpp_wrapper = self.cpp_gemms = True
        self.cpp_gemms_failed = False  # a GEMM the C++ template cannot run: every backend, always

    def refresh(self) -> None:
        """Recompile if any weight, module or plain module attribute changed since the last
        compile (frozen weights are baked in; the graph does not guard on modules), or one of
        the MYLLM101_COMPILE_* switches did."""
        model = self.model()
        self.autotune = os.environ.get("MYLLM101_COMPILE_AUTOTUNE", "1") != "0"
        self.cpp_wrapper = os.environ.get("MYLLM101_COMPILE_CPP_WRAPPER", "1") != "0"
        self.cpp_gemms = (
            self.autotune
            and os.environ.get("MYLLM101_COMPILE_CPP_GEMMS", "1") != "0"
            and not self.cpp_gemms_failed
        )
        bf16 = self.autotune and os.environ.get("MYLLM101_COMPILE_INT8_BF16", "1") != "0"
        int8.register_for_compile(model, bf16_activations=bf16)  # how its Int8Linears run
        int4.register_for_compile(model)
        version = (_model_version(model), self.autotune, self.cpp_wrapper, self.cpp_gemms, bf16)
        if version != self.version:
            step = _own_code(static_decode_step, f"static_decode_step_{next(_COMPILES)}")
            self.step = torch.compile(step, dynamic=False, options=GUARDS)
            self.version = version

    def __call__(self, input_ids, position_ids, visible, cache: StaticCache) -> torch.Tensor:
        """One step: writes slot ``cache.length`` and advances it -> logits (B, V)."""
        # dense copies: a column sliced from a longer tensor has strides that depend on that
        # tensor's length, and Dynamo guards on strides (a recompile per generation length)
        input_ids, position_ids = _dense(input_ids), _dense(position_ids)
        slot = torch.tensor([cache.length], device=input_ids.device)
        # Inductor's settings are read outside torch.compile's options: set here, where any
        # (re)compile runs
        settings = dict(freezing=True, max_autotune=self.autotune, cpp_wrapper=self.cpp_wrapper)
        if self.cpp_gemms:
            settings["max_autotune_gemm_backends"] = CPP_GEMMS
        try:
            with torch._inductor.config.patch(**settings):
                logits = self.step(self.model(), input_ids, position_ids, visible, slot, cache.k,
                                   cache.v)  # fmt: skip
        except Exception as e:  # compiling failed before the graph ran: the cache is untouched
            if not (self.cpp_gemms and _no_gemm_choice(e)):
                raise
            self.cpp_gemms_failed = True
            self.refresh()  # a new graph that may use every GEMM backend
            return self(input_ids, position_ids, visible, cache)
        cache.length += 1
        return logits


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_decoder(model: nn.Module) -> CompiledDecoder:
    """The model's CompiledDecoder (one per model, kept while the model lives), up to date."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = CompiledDecoder(model)
    decoder.refresh()
    return decoder
