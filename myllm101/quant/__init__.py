"""Whole-model quantization and its evaluation (``myllm101 quantize`` / ``myllm101 eval``).

    from myllm101.quant import quantize, save_quantized
    quantize(model, "int8")                       # every Linear (a tied head with its embedding)
    save_quantized(model, "q8", cfg, tokenizer)   # config.json gets a "quantization" entry
    model, tok, cfg = myllm101.train.checkpoint.load_model("q8")   # rebuilt quantized

quantize.py: schemes, module replacement, save/load of the quantized state; heldout.py: the
held-out texts and calibration windows; eval.py: perplexity, agreement, speed, size, memory;
plot.py: perplexity vs size; cli.py: the two commands.
"""

from myllm101.quant.quantize import SCHEMES, Scheme, parse_scheme, quantize, save_quantized

__all__ = ["SCHEMES", "Scheme", "parse_scheme", "quantize", "save_quantized"]
