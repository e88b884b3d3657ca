"""The command line: end-to-end runs, files written, and option errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclic_soft_reset import hyperparameters
from scripts import plot_algoperf, run
from scripts.main_job import options, summary

ROOT = Path(__file__).resolve().parents[1]
EVAL_COLUMNS = {
    "global_step",
    "preemption_count",
    "score",
    "total_duration",
    "accumulated_submission_time",
    "accumulated_eval_time",
    "accumulated_logging_time",
    "train/accuracy",
    "train/loss",
    "validation/accuracy",
    "validation/loss",
    "validation/num_examples",
    "test/accuracy",
    "test/loss",
    "test/num_examples",
}


def cli(*args, cwd=ROOT):
    """Run ``python -m scripts.run`` for real in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "scripts.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_png(path: Path, min_side=200):
    assert path.exists() and path.stat().st_size > 5_000, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side
        gray = np.asarray(image.convert("L"))
    assert len(np.unique(gray)) > 10  # Not a blank canvas.


def read_csv(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One real CLI run on tiny digits: 3 cycles of 20 steps (v2's plan; the default has
    one), stopped at step 30."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = cli(
        "--workload",
        "digits",
        "--tiny",
        "--reset_strategy",
        "soft",
        "--max_steps",
        "30",
        "--eval_every_steps",
        "5",
        "--run_past_target",
        "--set",
        "early_switching=false",
        "--set",
        "num_cycles=3",  # The cyclic machinery: v2's plan of 3 cycles.
        "--output_dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_run_writes_algoperf_csv(digits_run):
    out, _ = digits_run
    rows = read_csv(out / "eval_measurements.csv")
    assert set(rows[0]) >= EVAL_COLUMNS
    assert [int(r["global_step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    losses = [float(r["validation/loss"]) for r in rows]
    assert losses[3] < losses[0] - 0.1  # It learnt during the first cycle.
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)
    everything = read_csv(out / "measurements.csv")
    assert any(r.get("reset/cycle") == "1" for r in everything)


@pytest.mark.slow
def test_run_writes_events_config_and_plots(digits_run):
    out, stdout = digits_run
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    resets = [e for e in events if e["event"] == "reset"]
    assert [(e["step"], e["cycle"], e["reason"]) for e in resets] == [(20, 1, "planned")]
    assert 0.0 <= resets[0]["tau"] <= 1.0
    # Whether the later peaks rose, as the metrics logged it (1: not; growth null: unread).
    logged = [r for r in read_csv(out / "measurements.csv") if r.get("reset/cycle") == "1"]
    assert resets[0]["peak_factor"] == float(logged[0]["reset/peak_factor"]) >= 1.0
    assert ("later peaks x" in stdout) == (resets[0]["peak_factor"] != 1.0)
    assert events[-1]["event"] == "end" and events[-1]["step"] == 30
    # The plan re-fitted to the budget on the reference clock, at evaluations, said so.
    refits = [e for e in events if e["event"] == "plan_refit"]
    assert refits and all(e["step"] % 5 == 0 and e["end"] != 60 for e in refits)
    assert "Time budget:" in stdout and "Plan re-fitted to the budget" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["reset_strategy"] == "soft"
    assert config["hyperparameters"]["early_switching"] is False
    assert config["hyperparameter_overrides"] == {"early_switching": False, "num_cycles": 3}
    assert config["initial_plan"]["boundaries"] == [0, 20, 40, 60]
    assert config["seed"] == 0 and config["workload"] == "digits"
    for name in ("lr_schedule_planned", "lr_schedule", "validation_accuracy", "validation_loss"):
        assert_png(out / f"{name}.png")
    assert "RESET -> cycle 1" in stdout and "tau" in stdout
    assert "best accuracy" in stdout and "20-30" in stdout  # The cycle table.
    assert "Target (validation accuracy > 0.974929" in stdout  # calibration.json (tie-safe)


@pytest.mark.slow
def test_plot_algoperf_reads_a_run_directory(digits_run, tmp_path):
    out, _ = digits_run
    assert plot_algoperf.main([str(out.parent), "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["run__validation_accuracy.png", "run__validation_loss.png"]
    assert_png(tmp_path / written[0])
    assert [r.step for r in plot_algoperf.resets_beside(out / "eval_measurements.csv")] == [20]


def test_plot_algoperf_on_runner_layout_without_resets(tmp_path):
    trial = tmp_path / "exp" / "digits_jax" / "trial_1"
    trial.mkdir(parents=True)
    columns = [
        "accumulated_submission_time",
        "global_step",
        "preemption_count",
        "score",
        "validation/accuracy",
        "validation/loss",
        "validation/num_examples",
    ]
    lines = [",".join(columns)]
    for step in range(1, 6):
        lines.append(f"{step},{step * 10},0,{step},{0.5 + step / 20},{1 / step},359")
    (trial / "eval_measurements.csv").write_text("\n".join(lines) + "\n")
    (trial / "measurements.csv").write_text("global_step,loss\n0,2.3\n")
    assert plot_algoperf.main([str(tmp_path / "exp"), "--out", str(tmp_path / "p")]) == 0
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == [
        "digits_jax__trial_1__validation_accuracy.png",
        "digits_jax__trial_1__validation_loss.png",
    ]
    assert plot_algoperf.resets_beside(trial / "eval_measurements.csv") == []
    with pytest.raises(SystemExit) as error:
        plot_algoperf.main([str(tmp_path / "p")])
    assert error.value.code == 2


@pytest.mark.slow
def test_lower_is_better_workload_full_reset_two_seeds_and_hparams_file(tmp_path, capsys):
    hparams = tmp_path / "hp.json"
    hparams.write_text(
        json.dumps({"num_cycles": 2, "learning_rate": 0.003, "cycle_lr_factors": [1.0, 1.0]})
    )
    code = run.main(
        [
            "--workload",
            "breast_cancer",
            "--tiny",
            "--reset_strategy",
            "full",
            "--hparams_file",
            str(hparams),
            "--seed",
            "0",
            "1",
            "--max_steps",
            "35",
            "--eval_every_steps",
            "5",
            "--run_past_target",
            "--no_progress",
            "--output_dir",
            str(tmp_path / "bc"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for seed in (0, 1):
        out = tmp_path / "bc" / f"seed{seed}"
        config = json.loads((out / "config.json").read_text())
        assert config["hyperparameters"]["num_cycles"] == 2
        assert config["hyperparameters"]["cycle_lr_factors"] == [1.0, 1.0]
        assert config["hyperparameters"]["reset_strategy"] == "full"
        assert config["initial_plan"]["boundaries"] == [0, 30, 60]
        assert config["target"]["higher_is_better"] is False
        assert_png(out / "validation_loss.png")
        assert not (out / "validation_accuracy.png").exists()
        rows = read_csv(out / "eval_measurements.csv")
        assert "validation/error_rate" in rows[0]
    assert "best loss" in printed and "full seed 1" in printed and "target step" in printed
    # cycle_warmup_factors was not given: its default's 1 entry does not fit 2 cycles,
    # resolved to ones and said (never null).
    assert config["hyperparameters"]["cycle_warmup_factors"] == [1.0, 1.0]
    assert "num_cycles=2 differs from the 1 entries of the default cycle_warmup_factors" in (
        printed
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workload", "mnist"], ["digit_sums", "digits", "breast_cancer"]),
        (["--reset_strategy", "half"], ["none", "full", "params_only", "soft"]),
        (["--set", "num_cyclez=4"], ["valid names:", "learning_rate", "switch_k"]),
        (["--set", "reset_alpha=2"], ["reset_alpha", "[0, 1]"]),
        (["--set", "num_cycles=three"], ["num_cycles", "integer"]),
        (["--set", "warmup_shape=wavy"], ["warmup_shape", "linear", "cosine"]),
        (["--set", "novalue"], ["KEY=VALUE"]),
        (["--max_steps", "0"], ["--max_steps", ">= 1"]),
        (["--param_scale", "0"], ["--param_scale", "> 0"]),
        (["--hparams_file", "/nonexistent/hp.json"], ["cannot read"]),
    ],
)
def test_bad_options_fail_at_once(args, expected, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as error:
        run.main([*args, "--output_dir", str(out)])
    assert error.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert not out.exists()


def _short_run(out, *extra):
    args = ["--workload", "breast_cancer", "--tiny", "--max_steps", "5", "--no_progress"]
    args += ["--reset_strategy", "soft"]
    return run.main([*args, "--output_dir", str(out), *extra])


@pytest.mark.slow
def test_an_existing_run_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _short_run(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as error:
        _short_run(out, "--max_steps", "3")
    assert error.value.code == 2
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert _short_run(out, "--max_steps", "3", "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["max_steps"] == 3


@pytest.mark.slow
def test_help_states_each_default_once_and_the_header_names_the_device(digits_run, capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--overwrite" in text
    for block in text.split("\n  -")[1:]:  # One block per option.
        assert block.count("default") <= 1, block
    _, stdout = digits_run
    assert " x cpu | -> " in stdout


@pytest.mark.slow
def test_loss_target_printed_once_and_the_last_cycle_ends_with_the_plan(tmp_path, capsys):
    """breast_cancer's target is the validation loss: one "val loss" per evaluation line;
    a run ended by its plan (T, re-fitted to the time budget) shows its last cycle ending
    at T, not at the final evaluation's step T + 1."""
    args = ["--workload", "breast_cancer", "--tiny", "--run_past_target", "--no_progress"]
    args += [
        "--reset_strategy",
        "soft",
        "--set",
        "stop_when_plan_ends=true",
        "--set",
        "num_cycles=3",
    ]
    assert run.main([*args, "--output_dir", str(tmp_path / "bc")]) == 0
    printed = capsys.readouterr().out
    eval_lines = [line for line in printed.splitlines() if "| val loss" in line]
    assert eval_lines and all(line.count("val loss") == 1 for line in eval_lines)
    with (tmp_path / "bc" / "eval_measurements.csv").open() as f:
        final_step = int(list(csv.DictReader(f))[-1]["global_step"])
    table = [line.split() for line in printed.splitlines() if line.strip().startswith("2 ")]
    assert table and table[-1][1].endswith(f"-{final_step - 1}"), table


@pytest.mark.slow
def test_bad_option_exit_code_from_the_real_command(tmp_path):
    proc = cli("--set", "reset_strategy=sometimes", "--output_dir", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert "reset_strategy" in proc.stderr and "soft" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_value_parsing_and_hyperparameter_namedtuple():
    items = ["num_cycles=4", "cycle_lr_factors=[1, 2.5, 1, 1]", "early_switching=false"]
    items += ["grad_clip=None", "decay_shape=linear"]
    assert options.parse_set_items(items, hyperparameters.NAMES) == {
        "num_cycles": 4,
        "cycle_lr_factors": (1.0, 2.5, 1.0, 1.0),
        "early_switching": False,
        "grad_clip": None,
        "decay_shape": "linear",
    }
    assert options.as_hyperparameters({}) is None
    hp = options.as_hyperparameters({"num_cycles": 4, "reset_strategy": "full"})
    assert hp.num_cycles == 4 and hp._fields == ("num_cycles", "reset_strategy")


def test_budget_lines_say_what_happened_to_the_time_budget():
    events = [
        {"event": "plan_refit", "step": 27, "seconds_per_step": 0.01, "budget_spent": 0.02,
         "end": 1272},
        {"event": "reset", "step": 300},
        {"event": "plan_refit", "step": 311, "seconds_per_step": 0.0101, "budget_spent": 0.24,
         "end": 1270},
    ]  # fmt: skip
    lines = summary.budget_lines(events, 13.5, 5.31, "target_reached")
    assert (
        lines[0] == "Time budget: 5.31 s of 13.50 s submission time used (39%); stopped: "
        "target_reached."
    )
    assert "re-fitted to the budget 2 times: first at step 27" in lines[1]
    assert "last at step 311 (0.0101 s/step, 24% spent, ends at step 1270)" in lines[1]
    over = summary.budget_lines([], 1.0, 1.1, "time_budget")
    assert "at evaluations only" in over[0] and "not re-fitted" in over[1]
    once = summary.budget_lines(events[:1], 13.5, 5.31, "target_reached")
    assert "re-fitted to the budget once: first at step 27" in once[1]
    assert "window" not in lines[1]
    cooled = [*events, {**events[-1], "step": 620, "window_end": 673}]
    said = summary.budget_lines(cooled, 13.5, 13.1, "time_budget")[1]
    moved = "At step 620 the first cycle's window moved (too slow hardware): its rate reaches 0"
    assert said.endswith(moved + " at step 673.")


@pytest.mark.slow
def test_run_takes_another_algoperf_submission(tmp_path):
    """--submission nadamw_baseline (issue 21): the main job runs AlgoPerf's NAdamW
    baseline through the same runner; evaluations only, no plan figures, to the end."""
    out = tmp_path / "nadamw"
    proc = cli(
        "--submission",
        "nadamw_baseline",
        "--tiny",
        "--max_steps",
        "20",
        "--eval_every_steps",
        "10",
        "--no_progress",
        "--output_dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submission nadamw_baseline" in proc.stdout
    assert f"Run directory: {out}" in proc.stdout  # It reached the end.
    rows = read_csv(out / "eval_measurements.csv")
    assert [int(r["global_step"]) for r in rows] == [10, 20]
    config = json.loads((out / "config.json").read_text())
    assert config["submission"] == "nadamw_baseline" and config["hyperparameters"] == {}
    assert not (out / "lr_schedule.png").exists() and (out / "validation_accuracy.png").exists()
    ends = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert ends[-1]["event"] == "end" and ends[-1]["reason"] == "max_steps"
    refused = cli("--submission", "nadamw_baseline", "--set", "num_cycles=2")
    assert refused.returncode == 2 and "--set: options of our submission" in refused.stderr


@pytest.mark.slow
def test_param_scale_runs_a_held_out_variant(tmp_path, capsys):
    """--param_scale C: the same function at init, every Adam step moves w C times further;
    recorded in config.json, so that --resume rebuilds the same workload."""
    args = ["--workload", "digits", "--tiny", "--max_steps", "10", "--no_progress"]
    args += ["--reset_strategy", "soft", "--eval_every_steps", "5", "--run_past_target"]
    for scale in (1.0, 300.0):
        out = tmp_path / f"c{scale:g}"
        assert run.main([*args, "--param_scale", str(scale), "--output_dir", str(out)]) == 0
        assert json.loads((out / "config.json").read_text())["options"]["param_scale"] == scale
    capsys.readouterr()
    losses = {
        scale: [
            float(r["validation/loss"])
            for r in read_csv(tmp_path / f"c{scale:g}" / "eval_measurements.csv")
        ]
        for scale in (1.0, 300.0)
    }
    assert losses[1.0] != losses[300.0]  # The same seed, another run: the rate acts 300x.


def test_the_figure_follows_a_cooldown_the_plan_does_not_show():
    """A cooldown moves the device's window, not the plan: the monitor's schedule as run
    falls linearly from the plan's rate at its start to 0 at its end, and stays 0."""
    from scripts.main_job.monitor import PlanSnapshot, cooled

    steps = np.arange(0, 11)
    plan = PlanSnapshot(0, {"boundaries": [0, 10]}, steps, np.linspace(1.0, 0.0, 11))
    run = cooled(plan, step=4, end=8)
    np.testing.assert_allclose(run.rates[:5], plan.rates[:5])  # As planned up to the start.
    np.testing.assert_allclose(run.rates[4:], 0.6 * np.asarray([1, 0.75, 0.5, 0.25, 0, 0, 0]))
    assert cooled(plan, step=11, end=12) is plan  # Nothing left to cool.
