"""``myllm101 sweep`` on tiny model directories: the grid, selection on val, test once, resume."""

import json

import pytest

from myllm101 import cli as main_cli
from myllm101.finetune import sweep
from myllm101.finetune.sweep import Point
from tests.test_finetune_cli import bert_dir, genre_data, llama_dir, sft_data  # noqa: F401 (fixtures)


def sweep_args(base, data, out, *more) -> list[str]:
    return ["sweep", "--base", str(base), "--data", str(data), "--out", str(out),
            "--no-progress", *more]  # fmt: skip


def test_grid_names_and_errors():
    points = sweep.grid("lora", [1e-3, 3e-3], [4, 16], [5e-5])
    assert [p.name for p in points] == [
        "lora-r4-lr0.001", "lora-r16-lr0.001", "lora-r4-lr0.003", "lora-r16-lr0.003",
        "full-lr5e-05"]  # fmt: skip
    with pytest.raises(ValueError, match="--ranks: expected ranks >= 1"):
        sweep.grid("lora", [1e-3], [0], [])
    with pytest.raises(ValueError, match="expected distinct points"):
        sweep.grid("lora", [1e-3, 1e-3], [4], [])
    with pytest.raises(ValueError, match="expected at least one point"):
        sweep.grid("lora", [], [4], [])
    with pytest.raises(ValueError, match="expected lora or qlora"):
        sweep.grid("full", [1e-3], [4], [])


def test_fit_labels_read_the_curves():
    steps = list(range(1, 41))

    def run(train, val):
        return {"step": steps, "loss": train, "val_step": [0, 10, 20, 30, 40],
                "val": [{"loss": v} for v in val]}  # fmt: skip

    falling = [2.0 - 0.04 * s for s in steps]
    assert sweep.fit_label(run(falling, [2.0, 1.5, 1.2, 1.4, 1.6])) == "overfits"
    assert sweep.fit_label(run(falling, [2.0, 1.5, 1.2, 1.1, 1.05])) == "ok"
    # the train loss barely moved: the model does not even fit its training data
    assert sweep.fit_label(run([2.0 - 0.001 * s for s in steps], [2.0] * 5)) == "underfits"
    # the train loss went up: the learning rate is too high
    assert sweep.fit_label(run([1.0 + 0.02 * s for s in steps], [2.0] * 5)) == "unstable"
    # val never better than at the start, and a jump above it: also unstable
    assert sweep.fit_label(run(falling, [1.0, 1.3, 1.05, 1.2, 1.1])) == "unstable"
    # val turning up while the train loss has stopped falling is not called over-fitting
    plateau = [2.0 - 0.1 * min(s, 12) for s in steps]
    assert sweep.fit_label(run(plateau, [2.0, 1.5, 1.2, 1.4, 1.6])) == "ok"


def test_select_prefers_the_metric_then_fewer_parameters():
    rows = [{"point": "a", "val_best": 0.5, "trainable": 10},
            {"point": "b", "val_best": 0.7, "trainable": 100},
            {"point": "c", "val_best": 0.7, "trainable": 50},
            {"point": "d", "val_best": float("nan"), "trainable": 1}]  # fmt: skip
    assert sweep.select(rows, higher_is_better=True)["point"] == "c"
    assert sweep.select(rows, higher_is_better=False)["point"] == "a"
    with pytest.raises(ValueError, match="no point reached a finite val score"):
        sweep.select(rows[3:], True)


def test_classify_sweep_end_to_end(bert_dir, genre_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    rc = main_cli.main(sweep_args(bert_dir, genre_data, out, "--task", "classify",
                                  "--lrs", "1e-3", "1e-2", "--ranks", "2", "4",
                                  "--full-lrs", "1e-3", "--epochs", "3", "--batch-size", "8",
                                  "--eval-every", "6", "--max-length", "16",
                                  "--patience", "10"))  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    result = json.loads((out / "sweep.json").read_text())
    names = [r["point"] for r in result["rows"]]
    assert names == ["lora-r2-lr0.001", "lora-r4-lr0.001", "lora-r2-lr0.01", "lora-r4-lr0.01",
                     "full-lr0.001"]  # fmt: skip
    for name in names:  # each point is a whole finetune run
        s = json.loads((out / name / "summary.json").read_text())
        assert s["test"] is None and s["sweep_point"] == name
        assert (out / name / "best" / "finetune.json").is_file()
    rows = {r["point"]: r for r in result["rows"]}
    best = max(r["val_best"] for r in rows.values())
    assert rows[result["selected"]]["val_best"] == best
    # rank 4 trains more parameters than rank 2; full fine-tuning trains everything
    assert rows["lora-r2-lr0.001"]["trainable"] < rows["lora-r4-lr0.001"]["trainable"]
    assert rows["full-lr0.001"]["trainable"] > rows["lora-r4-lr0.001"]["trainable"]
    # the test split: scored once, for the selected point, on its best state
    assert set(result["test"]) == {"loss", "accuracy", "macro_f1"}
    assert result["baseline"]["majority_baseline"]["label"] in ("alpha", "beta", "gamma")
    table = (out / "sweep.md").read_text()
    assert f"**{result['selected']}**" in table and "Test, selected point" in table
    assert (out / "curves.png").stat().st_size > 10_000
    assert f"test, {result['selected']} only" in printed


def test_test_score_is_the_selected_best_state(bert_dir, genre_data, tmp_path):  # noqa: F811
    """The sweep's test number equals evaluating that point's best/ state independently."""
    from myllm101.finetune import cli as ft_cli
    from myllm101.finetune.best import BestSaver
    from myllm101.finetune.run import evaluate, prepare_model, resize_classifier
    from myllm101.quant.eval import load_any

    out = tmp_path / "sweep"
    assert main_cli.main(sweep_args(bert_dir, genre_data, out, "--task", "classify", "--lrs",
                                    "1e-2", "--ranks", "2", "--full-lrs", "--epochs", "2",
                                    "--batch-size", "8", "--eval-every", "3",
                                    "--max-length", "16")) == 0  # fmt: skip
    result = json.loads((out / "sweep.json").read_text())
    assert result["selected"] == "lora-r2-lr0.01"
    loaded = load_any(str(bert_dir))
    resize_classifier(loaded.model, 3)
    model = prepare_model(loaded.model, "classify", "lora", r=2, base_name=str(bert_dir))
    BestSaver("lora").restore(model, out / "lora-r2-lr0.01" / "best")
    args = main_cli.build_parser().parse_args(
        sweep_args(bert_dir, genre_data, out, "--task", "classify", "--max-length", "16",
                   "--batch-size", "8"))  # fmt: skip
    prep = ft_cli.prepare_data(args, with_test=True)
    test = evaluate(model, prep.batches["test"], "classify", prep.num_labels)
    assert test == pytest.approx(result["test"], rel=1e-6)


def test_resume_keeps_finished_points(llama_dir, sft_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    common = ("--task", "sft", "--lrs", "1e-2", "--ranks", "2", "--epochs", "1",
              "--batch-size", "8", "--eval-every", "2", "--no-test")  # fmt: skip
    assert main_cli.main(sweep_args(llama_dir, sft_data, out, *common, "--full-lrs")) == 0
    first = (out / "lora-r2-lr0.01" / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    # an existing sweep needs --resume or --overwrite
    assert main_cli.main(sweep_args(llama_dir, sft_data, out, *common, "--full-lrs")) == 2
    assert "--resume to run only its missing points" in capsys.readouterr().err
    # --resume with one more point: the finished one is kept as it was, the new one runs
    rc = main_cli.main(sweep_args(llama_dir, sft_data, out, *common, "--full-lrs", "1e-3",
                                  "--resume"))  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "lora-r2-lr0.01: finished before, kept" in printed
    assert (out / "lora-r2-lr0.01" / "metrics.jsonl").read_bytes() == first
    result = json.loads((out / "sweep.json").read_text())
    assert [r["point"] for r in result["rows"]] == ["lora-r2-lr0.01", "full-lr0.001"]
    assert result["test"] is None and "Test: not evaluated" in (out / "sweep.md").read_text()


def test_bad_sweep_options(llama_dir, sft_data, tmp_path, capsys):  # noqa: F811
    rc = main_cli.main(sweep_args(llama_dir, sft_data, tmp_path / "s", "--task", "sft",
                                  "--ranks", "0"))  # fmt: skip
    assert rc == 2 and "--ranks: expected ranks >= 1" in capsys.readouterr().err
    rc = main_cli.main(sweep_args(llama_dir, sft_data, tmp_path / "s", "--task", "sft",
                                  "--lrs", "-1"))  # fmt: skip
    assert rc == 2 and "lr" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing written before the options are checked


def test_point_names_are_directory_names():
    assert Point("full", 5e-5).name == "full-lr5e-05"
    assert Point("qlora", 1e-3, 8).name == "qlora-r8-lr0.001"
