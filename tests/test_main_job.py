"""The main job as a researcher uses it: Ctrl-C, --resume, the default story of three
strategies, and `python -m scripts.compare` on its run folders. Real runs (tiny
workloads, JAX on CPU), the interrupted one in a subprocess sent a real SIGINT."""

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from scripts import compare, run
from scripts.main_job import monitor, options, resume, train

pytestmark = pytest.mark.slow  # Subprocesses, fresh processes or AlgoPerf itself.

ROOT = Path(__file__).resolve().parents[1]
# v3's one planned cycle, of 600 steps (cycle_budget_factor 10 x the tiny step_hint of 60),
# in a budget of 1.8 s of the reference clock (900 steps), evaluations and checkpoints every
# 25 steps, past the target (reached at step 375, so every reset's tau is 0: the params carry
# over, the schedule re-warms). The part resumed after step 100 crosses the planned cycle's
# end (a reset at 600), runs the cycle to the budget that follows it (its reset at 890) and
# ends by the time budget at step 900: RESUMED_RESETS, checked exactly.
LONG_RUN = [
    "--workload",
    "digits",
    "--tiny",
    "--reset_strategy",
    "soft",
    "--set",
    "cycle_budget_factor=10",
    "--set",
    "time_budget_factor=15",
    "--max_runtime_sec",
    "1.8",
    "--eval_every_steps",
    "25",
    "--run_past_target",
    "--no_progress",
]
SIGINT_AFTER = "step    100 |"  # The evaluation line after which the test presses Ctrl-C.
RESUMED_RESETS = [(600, 1, "planned"), (890, 2, "planned")]  # (step, cycle, reason)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def events(out):
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def final_params(out):
    raw = serialization.msgpack_restore((out / train.CHECKPOINT_FILE).read_bytes())
    return raw["global_step"], jax.tree.leaves(raw["model_params"])


def command(*args):
    return [sys.executable, "-m", "scripts.run", *map(str, args)]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run sent SIGINT after its evaluation at step 100: ``(folder, stdout, stderr,
    exit code)``."""
    out = tmp_path_factory.mktemp("main") / "interrupted"
    proc = subprocess.Popen(
        command(*LONG_RUN, "--output_dir", out),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(SIGINT_AFTER):
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=300)
    return out, "".join(seen) + rest, err, proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("main") / "whole"
    proc = subprocess.run(
        command(*LONG_RUN, "--output_dir", out), cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_ctrl_c_ends_with_the_summary_so_far_and_exit_130(interrupted):
    out, stdout, stderr, code = interrupted
    assert code == monitor.INTERRUPTED_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "Ctrl-C: stopping after this step" in stderr
    end = events(out)[-1]
    assert end["event"] == "end" and end["reason"] == "interrupted"
    stopped_at = end["step"]
    assert stopped_at >= 100
    assert "best accuracy" in stdout  # The cycle table.
    assert "stopped: interrupted" in stdout and f"--resume {out}" in stdout
    steps = [int(r["global_step"]) for r in read_rows(out / "eval_measurements.csv")]
    assert steps[:4] == [25, 50, 75, 100] and steps[-1] <= stopped_at
    assert read_rows(out / "measurements.csv")
    for name in ("lr_schedule", "validation_accuracy", "validation_loss"):
        assert (out / f"{name}.png").stat().st_size > 5_000


def test_resume_refuses_a_different_configuration(interrupted, capsys):
    out = interrupted[0]
    before = (out / "events.jsonl").read_text()
    for extra, named in (
        (["--max_steps", "7"], "--max_steps"),
        (["--seed", "3"], "--seed"),
        (["--set", "num_cycles=4"], "--set"),
        (["--output_dir", "elsewhere"], "--output_dir"),
    ):
        with pytest.raises(SystemExit) as error:
            run.main(["--resume", str(out), *extra])
        assert error.value.code == 2
        err = capsys.readouterr().err
        assert named in err and "config.json" in err, err
    # The same configuration written out again is accepted (checked, not run here).
    explicit = resume.explicit_options(options.build_parser(), ["--resume", str(out), "--tiny"])
    given = options.build_parser().parse_args(["--resume", str(out), "--tiny"])
    config = json.loads((out / "config.json").read_text())
    assert resume.resumed_args(config, given, explicit).tiny is True
    assert (out / "events.jsonl").read_text() == before


def test_resume_in_a_fresh_process_continues_bit_for_bit(interrupted, uninterrupted):
    out = interrupted[0]
    proc = subprocess.run(
        command("--resume", out, "--no_progress"), cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed at step" in proc.stdout
    got, want = (
        read_rows(out / "eval_measurements.csv"),
        read_rows(uninterrupted / "eval_measurements.csv"),
    )
    columns = ["global_step", "validation/loss", "validation/accuracy", "train/loss"]
    assert [[r[c] for c in columns] for r in got] == [[r[c] for c in columns] for r in want]
    assert {r["preemption_count"] for r in got} == {"0", "1"}
    step, params = final_params(out)
    assert (step, len(params)) == (
        final_params(uninterrupted)[0],
        len(final_params(uninterrupted)[1]),
    )
    for a, b in zip(params, final_params(uninterrupted)[1], strict=True):
        np.testing.assert_array_equal(a, b)
    kinds = [(e["event"], e.get("step")) for e in events(out)]
    whole = [(e["event"], e.get("step")) for e in events(uninterrupted)]
    assert [k for k in kinds if k[0] != "resumed"] == whole
    resumed_at = next(e["step"] for e in events(out) if e["event"] == "resumed")
    resets = [(e["step"], e["cycle"], e["reason"]) for e in events(out) if e["event"] == "reset"]
    assert [r for r in resets if r[0] > resumed_at] == RESUMED_RESETS
    assert (events(out)[-1]["event"], events(out)[-1]["reason"]) == ("end", "time_budget")
    # Finished now: nothing left to resume, said clearly.
    again = subprocess.run(command("--resume", out), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "every run ended" in again.stderr


def test_resume_refuses_a_folder_without_a_run_or_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.main(["--resume", str(tmp_path)])
    assert "holds no run (no config.json)" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "events.jsonl").write_text("")
    with pytest.raises(SystemExit):
        run.main(["--resume", str(tmp_path)])
    assert "no checkpoint in" in capsys.readouterr().err


def test_strategies_by_default_and_by_option():
    parser = options.build_parser()
    assert options.strategies_to_run(parser.parse_args([]), {}) == ["soft", "none", "full"]
    args = parser.parse_args(["--reset_strategy", "full", "soft", "full"])
    assert options.strategies_to_run(args, {}) == ["full", "soft"]
    assert options.strategies_to_run(parser.parse_args([]), {"reset_strategy": "none"}) == ["none"]
    # The default strategy is left out of the overrides: hyperparameters=None, self-tuning.
    assert options.strategy_overrides({"reset_strategy": "soft"}, "soft") == {}
    assert options.strategy_overrides({"num_cycles": 2}, "full") == {
        "num_cycles": 2,
        "reset_strategy": "full",
    }


def test_the_story_races_algoperfs_baseline_unless_told_not_to(tmp_path):
    parser = options.build_parser()

    def labels(*argv):
        return [run.label for run in options.validate_options(parser.parse_args(list(argv)))]

    assert labels() == ["soft", "none", "full", "nadamw_baseline"]
    assert labels("--no_baseline") == ["soft", "none", "full"]
    assert labels("--reset_strategy", "soft") == ["soft"]  # A study: ours alone.
    assert labels("--set", "reset_strategy=none") == ["none"]
    assert labels("--submission", "nadamw_baseline") == ["nadamw_baseline"]
    # Our --hparams_file goes to our runs only; the baseline is told nothing (self-tuning).
    hp_file = tmp_path / "hp.json"
    hp_file.write_text('{"num_cycles": 2}')
    args = parser.parse_args(["--hparams_file", str(hp_file)])
    runs = options.validate_options(args)
    ours, baseline = options.run_arguments(args, runs[0]), options.run_arguments(args, runs[-1])
    assert (ours.submission, ours.hparams_file) == ("ours", str(hp_file))
    assert (baseline.submission, baseline.hparams_file) == ("nadamw_baseline", None)
    assert options.contestant_hyperparameters(baseline) == (
        options.contestants.REGISTRY["nadamw_baseline"].hyperparameters
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The default story (soft, none, full, AlgoPerf's baseline) on tiny digits, 30 steps
    past a reset: a plan of 3 cycles (the default has one planned cycle; its variants are
    labelled so)."""
    out = tmp_path_factory.mktemp("story") / "story"
    args = ["--workload", "digits", "--tiny", "--max_steps", "30", "--eval_every_steps", "5"]
    args += ["--set", "num_cycles=3"]
    code = run.main([*args, "--run_past_target", "--no_progress", "--output_dir", str(out)])
    assert code == 0
    return out


def test_default_runs_the_three_strategies_and_the_baseline_into_one_figure(story, capsys):
    folders = sorted(p.name for p in story.iterdir() if p.is_dir())
    assert folders == ["full", "nadamw_baseline", "none", "soft"]
    for strategy in ("soft", "none", "full"):
        config = json.loads((story / strategy / "config.json").read_text())
        assert config["hyperparameters"]["reset_strategy"] == strategy
        resets = [e for e in events(story / strategy) if e["event"] == "reset"]
        assert [e["step"] for e in resets] == [20]
    baseline = json.loads((story / "nadamw_baseline" / "config.json").read_text())
    assert baseline["options"]["submission"] == "nadamw_baseline"
    assert baseline["hyperparameter_overrides"] == {}  # --set num_cycles=3 is ours alone.
    assert not [e for e in events(story / "nadamw_baseline") if e["event"] == "reset"]
    assert (story / compare.FIGURE).stat().st_size > 5_000
    table = (story / compare.TABLE).read_text()
    assert table.index("| digits | soft num_cycles=3 |") < table.index("| digits | none num")
    assert "| digits | nadamw_baseline |" in table


def test_compare_tables_show_tau_only_where_the_strategy_uses_it(story, tmp_path, capsys):
    assert compare.main([str(story / "soft"), str(story / "full"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows = {
        r["variant"].split()[0]: r
        for r in compare.run_rows([compare.load_run(story / s) for s in ("soft", "none", "full")])
    }
    assert "tau" in rows["soft"]["resets at step"]
    assert rows["full"]["resets at step"] == rows["none"]["resets at step"] == "20"
    assert (
        rows["soft"]["cycles run"] == "0-20, 20-30"
        and rows["soft"]["final plan"] == "0 20 35 50"  # Re-fitted to the budget.
    )
    assert "0/1" in printed and "never" in printed
    assert (tmp_path / compare.FIGURE).is_file() and (tmp_path / compare.TABLE).is_file()


def test_compare_draws_the_default_strategy_first_whatever_the_folder_order(story):
    """A folder's runs come sorted by name (full, none, soft): the default, drawn on top
    and widest, still leads the figure and the tables."""
    runs = [compare.load_run(story / s) for s in ("full", "none", "soft")]
    first_words = [variant.split()[0] for _, variant in compare.groups_of(runs)]
    assert first_words == ["soft", "full", "none"]
    bands = compare.figure_panels(runs)[0][3]
    assert [b.label.split()[0] for b in bands] == ["soft", "full", "none"]


def test_compare_pools_seeds_into_a_median_and_a_band(story):
    soft = compare.load_run(story / "soft")
    shifted = compare.Run(
        **{**soft.__dict__, "seed": 1, "metric": tuple(m + 0.1 for m in soft.metric)}
    )
    steps, median, low, high = compare.band([soft, shifted], "metric")
    assert steps == list(soft.steps)
    np.testing.assert_allclose(median, [m + 0.05 for m in soft.metric])
    np.testing.assert_allclose(low, soft.metric)
    np.testing.assert_allclose(high, shifted.metric)
    assert compare.median_or_never([100, None, 300]) == 300
    assert compare.median_or_never([None, None, 300]) == float("inf")
    summary = compare.summary_rows([soft, shifted])
    assert summary[0]["reached"] == "0/2" and summary[0]["seeds"] == "0 1"
    fig = compare.plots.comparison_figure(compare.figure_panels([soft, shifted]), title="t")
    top = fig.axes[0]
    labels = top.get_legend().get_texts()
    assert any("median of 2 seeds, min-max shaded" in t.get_text() for t in labels)
    assert any("soft num_cycles=3: reset at a planned boundary" in t.get_text() for t in labels)
    assert top.get_title() == "digits: validation accuracy"


def test_compare_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        compare.main([str(tmp_path)])
    assert error.value.code == 2
    assert "no run folder" in capsys.readouterr().err
