"""``myllm101 sample --compile``: greedy, the same text as eager sampling, decoded through the
compiled step (fast/compiled_decode.py; float32 logits equal to rounding, tested there)."""

from myllm101.train.cli import main
from tests.test_resume_sample_divergence import sample_run  # noqa: F401 (fixture)
from tests.train_helpers import one_thread  # noqa: F401 (autouse)


def test_sample_compile_prints_the_eager_text(sample_run, capsys, monkeypatch):  # noqa: F811
    from myllm101.fast import generate

    run, _, _ = sample_run
    args = ["sample", "--model", str(run), "To be", "--tokens", "8", "--temperature", "0",
            "--num-samples", "2"]  # fmt: skip
    assert main(args) == 0
    eager = capsys.readouterr().out
    monkeypatch.setenv("MYLLM101_COMPILE_AUTOTUNE", "0")  # tests/test_compiled_decode.py autotunes
    compiled = []  # the models generate() asked a compiled decoder for
    real = generate.compiled_decoder
    monkeypatch.setattr(generate, "compiled_decoder", lambda m: compiled.append(m) or real(m))
    assert main([*args, "--compile"]) == 0
    assert capsys.readouterr().out == eager
    assert len(compiled) == 2  # one per sample, both of the one model sample loaded
    assert compiled[0] is compiled[1]
