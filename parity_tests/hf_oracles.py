"""transformers models that tests use as oracles, loaded from local files only (never downloaded)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def hf_smollm2():
    """(transformers LlamaForCausalLM in float32, eval mode; its tokenizer) from the shipped GGUF."""
    import transformers
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from myllm101.hub.smollm2 import FILENAME, gguf_path

    path = gguf_path()
    kw = dict(gguf_file=FILENAME, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, **kw)
    # from_pretrained(gguf_file=...) needs accelerate (not installed); this is the same path
    # without it: transformers' config, dequantization and q/k un-permutation
    config = transformers.AutoConfig.from_pretrained(path.parent, **kw)
    with no_init_weights():  # the weights come from the file: skip the random init
        model = transformers.LlamaForCausalLM(config).to(torch.float32)
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    return model.eval(), tok
