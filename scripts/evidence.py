"""The evidence experiment: reset strategies and our decisions, over seeds, on every workload.

One command runs the grid (variant x scenario x workload x seed) through the local
runner and the real ``submission.py``, then writes a results directory and the report:

    .venv/bin/python -m scripts.evidence                    # the full grid (docs/evidence.md)
    .venv/bin/python -m scripts.evidence --grid small --out runs/evidence-small

* ``<out>/runs/<key>.json``: one finished run each. A run whose file exists is not
  redone, so an interrupted grid resumes where it stopped (``--redo`` starts over).
* ``<out>/runs.csv``: one row per run; ``<out>/tables.md``: the aggregated tables;
  ``<out>/figures/*.png``: learning curves (median and band over seeds, resets marked).
* ``--report PATH`` (default for the full grid: ``docs/evidence.md``): the report, with
  the tables, figures (copied beside it) and a reading derived from the numbers.

Variants are the four reset strategies (everything else at its default) and ablations
of our decisions, each ``soft`` with one hyperparameter changed. Scenarios are
*healthy* (the defaults: the target needs more than one cycle), *failed first cycle*
(its peak learning rate far too high) and *noisy* (a small validation subset).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
INF = math.inf

# --------------------------------------------------------------------------- the design


class Variant(NamedTuple):
    """A reset strategy, or an ablation: ``soft`` with one decision changed."""

    group: str  # "strategy" or "ablation"
    label: str
    overrides: Mapping[str, Any]


VARIANTS: dict[str, Variant] = {
    "none": Variant("strategy", "none (cyclic)", {"reset_strategy": "none"}),
    "full": Variant("strategy", "full (sequential)", {"reset_strategy": "full"}),
    "params_only": Variant("strategy", "params_only", {"reset_strategy": "params_only"}),
    "soft": Variant("strategy", "soft (defaults)", {}),
    "soft-alpha0": Variant("ablation", "alpha = 0", {"reset_alpha": 0.0}),
    "soft-alpha1": Variant("ablation", "alpha = 1", {"reset_alpha": 1.0}),
    "soft-failed-rule-off": Variant(
        "ablation", "failed-cycle rule off", {"failed_cycle_fresh_moments": False}
    ),
    "soft-switching-off": Variant("ablation", "early switching off", {"early_switching": False}),
    "soft-absolute-eps": Variant("ablation", "absolute tolerances", {"switch_relative": False}),
    "soft-grace0": Variant("ablation", "grace 0", {"switch_grace_evals": 0}),
    "soft-tau-best": Variant("ablation", "tau from the best eval", {"tau_metric": "best"}),
}
STRATEGY_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.group == "strategy")
# The detector's variants: soft's reset, a different detector. Each is the same run as
# "soft-switching-off" up to its first switch, which makes that run the counterfactual.
DETECTOR_VARIANTS = ("soft", "soft-absolute-eps", "soft-grace0")
COUNTERFACTUAL = "soft-switching-off"

# First-cycle peak factor of the "failed" scenario: 1000 x the base learning rate
# (peak 1.75; 100x does not break the batch-norm networks). The thesis: about 0.05 (30x).
FAILED_PEAK_FACTOR = 1000.0
# Validation examples in the "noisy" scenario (the binomial standard error of an
# accuracy near the target is about 2.5 points at 100 examples).
NOISY_VALIDATION_EXAMPLES = {"digit_sums": 100, "digits": 60, "breast_cancer": 40}


# Per-workload settings shared by every scenario, so that in the healthy scenario the
# target needs more than one cycle's learning: digits and breast_cancer reach their
# default targets within the first of three 100-step cycles (steps 60 and 10, seed 0).
STUDY_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # workload: (workload options, hyperparameters)
    "digit_sums": ({}, {}),
    "digits": ({"eval_every_steps": 5}, {"cycle_budget_factor": 0.3}),
    "breast_cancer": ({"validation_target_value": 0.1}, {"cycle_budget_factor": 0.2}),
}


class Scenario(NamedTuple):
    """Workload options and hyperparameters that set up a situation."""

    label: str
    description: str
    workload_options: Callable[[str], dict[str, Any]]
    hyperparameters: Mapping[str, Any]


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario(
        "healthy",
        "the defaults: 3 cycles over step_hint steps, the target needs more than one",
        lambda workload: {},
        {},
    ),
    "failed": Scenario(
        "failed first cycle",
        f"the first cycle's peak is {FAILED_PEAK_FACTOR:g}x the base learning rate",
        lambda workload: {},
        {"cycle_lr_factors": [FAILED_PEAK_FACTOR, 1.5727, 0.4289]},
    ),
    "noisy": Scenario(
        "noisy validation",
        "validation metrics on a small subset: "
        + ", ".join(f"{w} {n}" for w, n in NOISY_VALIDATION_EXAMPLES.items())
        + " examples",
        lambda workload: {"validation_examples": NOISY_VALIDATION_EXAMPLES[workload]},
        {},
    ),
}

WORKLOADS = ("digit_sums", "digits", "breast_cancer")
# Tiny models for the small grid: a few evaluations per cycle, seconds per run.
TINY_OPTIONS = {"hidden_sizes": (32, 32), "step_hint": 150, "eval_every_steps": 5}
GRIDS = {
    "full": {"workloads": WORKLOADS, "seeds": 5, "tiny": False},
    # A smoke-sized grid (tiny models, 2 seeds) for the test suite.
    "small": {"workloads": WORKLOADS, "seeds": 2, "tiny": True},
}


class RunSpec(NamedTuple):
    """One run of the grid."""

    workload: str
    scenario: str
    variant: str
    seed: int
    tiny: bool = False

    @property
    def key(self) -> str:
        """A file-safe unique name."""
        size = "tiny-" if self.tiny else ""
        return f"{size}{self.workload}__{self.scenario}__{self.variant}__seed{self.seed}"

    def hyperparameters(self) -> dict[str, Any]:
        """The workload's study settings, the scenario's, then the variant's on top."""
        return {
            **STUDY_SETTINGS[self.workload][1],
            **SCENARIOS[self.scenario].hyperparameters,
            **VARIANTS[self.variant].overrides,
        }

    def workload_options(self) -> dict[str, Any]:
        """Options of ``scripts.workloads.make_workload`` for this run."""
        options = dict(TINY_OPTIONS) if self.tiny else {}
        return {
            **options,
            **STUDY_SETTINGS[self.workload][0],
            **SCENARIOS[self.scenario].workload_options(self.workload),
        }


def grid(
    workloads: Sequence[str],
    scenarios: Sequence[str],
    variants: Sequence[str],
    seeds: Sequence[int],
    tiny: bool = False,
) -> list[RunSpec]:
    """Every combination, validated (unknown names fail before anything runs)."""
    for kind, names, known in (
        ("workload", workloads, WORKLOADS),
        ("scenario", scenarios, SCENARIOS),
        ("variant", variants, VARIANTS),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {unknown}; valid: {list(known)}.")
    return [
        RunSpec(w, sc, v, s, tiny)
        for w in workloads
        for sc in scenarios
        for v in variants
        for s in seeds
    ]


# --------------------------------------------------------------------------- one run


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Trains one run with the local runner and the real submission; a JSON-able record.

    The record holds the target, every evaluation (step, target metric, validation
    loss, submission time), every reset the submission logged, the initial plan's
    boundaries, and how the run ended.
    """
    import submission
    from scripts import local_runner, workloads

    workload = workloads.make_workload(spec.workload, **spec.workload_options())
    recorder = local_runner.MetricsRecorder()
    plans = []
    start = time.time()
    result = local_runner.train_once(
        workload,
        submission,
        spec.hyperparameters(),
        spec.seed,
        workload_name=spec.workload,
        eval_every_steps=workload.eval_every_steps,
        metrics_logger=recorder,
        hooks=local_runner.RunnerHooks(
            before_training=lambda state: plans.append(submission.plan_summary(state))
        ),
    )
    wall = time.time() - start
    metric_key = f"validation/{workload.target_metric_name}"
    evals = [
        {
            "step": step,
            "metric": _number(metrics[metric_key]),
            "loss": _number(metrics["validation/loss"]),
            "time": _number(metrics["accumulated_submission_time"]),
        }
        for step, metrics in result.eval_results
    ]
    resets = [
        {
            "step": step,
            "cycle": int(m["reset/cycle"]),
            "tau": _number(m["reset/tau"]),
            "metric": _number(m["reset/metric"]),
            "early_switch": bool(m["reset/early_switch"]),
            "non_finite": bool(m["reset/non_finite"]),
        }
        for step, m, _ in recorder.records
        if "reset/cycle" in m
    ]
    return {
        "key": spec.key,
        "spec": spec._asdict(),
        "hyperparameters": spec.hyperparameters(),
        "workload_options": {k: _jsonable(v) for k, v in spec.workload_options().items()},
        "target": {
            "metric": metric_key,
            "value": workload.validation_target_value,
            "higher_is_better": submission.metric_direction(workload),
        },
        "eval_every_steps": workload.eval_every_steps,
        "planned_boundaries": plans[0]["boundaries"],
        "evals": evals,
        "resets": resets,
        "target_step": result.target_step,
        "target_time": result.target_submission_time,
        "global_step": result.global_step,
        "stop_reason": result.stop_reason,
        "submission_time": result.train_state["accumulated_submission_time"],
        "wall_time": wall,
    }


def _number(value: Any) -> float | None:
    """A float for JSON: None for nan/inf (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _worker_run(spec: RunSpec) -> tuple[RunSpec, dict[str, Any] | None, str | None]:
    """Pool entry point: (spec, record, error text)."""
    try:
        return spec, run_one(spec), None
    except Exception as error:  # A failed run is reported, not fatal to the grid.
        return spec, None, f"{type(error).__name__}: {error}"


def _configure_jax(cache_dir: Path | None) -> None:
    """A persistent compilation cache shared by the grid's processes."""
    import jax

    if cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _init_worker(cache_dir: str | None) -> None:
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    _configure_jax(Path(cache_dir) if cache_dir else None)


def run_grid(
    specs: Sequence[RunSpec],
    out: Path,
    workers: int = 1,
    redo: bool = False,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Runs the specs whose record is missing (all with ``redo``); returns the errors.

    Records are written atomically (``.tmp`` then rename), so a killed grid leaves no
    half-written record and resumes with the next call. With ``workers > 1`` each
    process runs XLA single-threaded, so that the processes do not share cores.
    """
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if redo or not (runs_dir / f"{s.key}.json").exists()]
    say(f"{len(specs) - len(todo)} of {len(specs)} runs already done; {len(todo)} to run.")
    if not todo:
        return []
    cache = out / ".jax_cache"
    errors: list[str] = []
    start = time.time()

    def finished(done: int, spec: RunSpec, record: dict | None, error: str | None) -> None:
        if record is None:
            errors.append(f"{spec.key}: {error}")
            line = f"FAILED {error}"
        else:
            _write_json(runs_dir / f"{spec.key}.json", record)
            reached = record["target_step"]
            line = f"target at step {reached}" if reached is not None else "target not reached"
            line += f", {record['wall_time']:.0f} s"
        elapsed = time.time() - start
        eta = elapsed / done * (len(todo) - done)
        say(f"[{done}/{len(todo)}] {spec.key}: {line} (elapsed {elapsed:.0f} s, eta {eta:.0f} s)")

    if workers <= 1:
        _init_worker(str(cache))
        for done, spec in enumerate(todo, 1):
            finished(done, *_worker_run(spec))
        return errors
    env_before = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [env_before, "--xla_cpu_multi_thread_eigen=false"])
    )
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(str(cache),)) as pool:
            for done, result in enumerate(pool.imap_unordered(_worker_run, todo), 1):
                finished(done, *result)
    finally:
        if env_before is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = env_before
    return errors


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_records(out: Path, specs: Iterable[RunSpec]) -> dict[str, dict[str, Any]]:
    """The records of the given specs that exist, by key."""
    records = {}
    for spec in specs:
        path = out / "runs" / f"{spec.key}.json"
        if path.exists():
            records[spec.key] = json.loads(path.read_text(encoding="utf-8"))
    return records


# --------------------------------------------------------------------------- measures


def _value(x: float | None, higher: bool) -> float:
    """A metric as a number where larger is better; a missing value is the worst."""
    if x is None:
        return -INF
    return x if higher else -x


def steps_to_target(record: Mapping) -> float:
    """The step of the first evaluation past the target; inf when never reached."""
    return INF if record["target_step"] is None else float(record["target_step"])


def seconds_to_target(record: Mapping) -> float:
    """Submission seconds at that evaluation (compilation included); inf if never."""
    return INF if record["target_time"] is None else float(record["target_time"])


def recovery(record: Mapping, reset_index: int = 0) -> tuple[float | None, float | None]:
    """(target metric at the last evaluation at or before the reset, at the first after).

    (None, None) when the run has no such reset or no evaluation after it.
    """
    if len(record["resets"]) <= reset_index:
        return None, None
    step = record["resets"][reset_index]["step"]
    before = [e["metric"] for e in record["evals"] if e["step"] <= step]
    after = [e["metric"] for e in record["evals"] if e["step"] > step]
    if not after:
        return None, None
    return (before[-1] if before else None), after[0]


def improvement_tolerance(record: Mapping) -> float:
    """What counts as a real improvement of the target metric: 1% of the target."""
    return 0.01 * abs(record["target"]["value"])


def cycle_spans(record: Mapping) -> list[tuple[int, int, bool]]:
    """(start, end, ended_by_switch) of each cycle the run entered; the last one's end
    is where the run stopped."""
    starts = [0] + [r["step"] for r in record["resets"]]
    switched = [r["early_switch"] for r in record["resets"]] + [False]
    ends = starts[1:] + [record["global_step"]]
    return list(zip(starts, ends, switched, strict=True))


def missed_switches(record: Mapping) -> int:
    """Failed cycles that ran to their planned end without an early switch.

    A cycle failed when its last evaluation is not better than its first one by the
    improvement tolerance (it learnt nothing), or any of its evaluations is not finite.
    Only cycles that could switch count: a later cycle followed, and the cycle ran to a
    reset (not to the target).
    """
    if not record["hyperparameters"].get("early_switching", True):
        return 0
    higher = record["target"]["higher_is_better"]
    tolerance = improvement_tolerance(record)
    missed = 0
    for start, end, switched in cycle_spans(record)[:-1]:
        inside = [e["metric"] for e in record["evals"] if start < e["step"] <= end]
        if switched or not inside:
            continue
        first, last = _value(inside[0], higher), _value(inside[-1], higher)
        if None in inside or not last > first + tolerance:
            missed += 1
    return missed


def judge_first_switch(record: Mapping, twin: Mapping | None) -> str:
    """ "false", "right" or "" (no switch, or no counterfactual run to judge it by).

    ``twin`` is the same seed and scenario with early switching off: the same run up to
    the switch (the detector only records). The switch at step s in a cycle planned to
    end at e was false when, in the twin, the cycle got better after s: it reached the
    target in (s, e], or its metric at the last evaluation in (s, e] beats the metric at
    s by the improvement tolerance.
    """
    switches = [r for r in record["resets"] if r["early_switch"]]
    if not switches or twin is None:
        return ""
    step = switches[0]["step"]
    ends = [b for b in twin_boundaries(twin) if b > step]
    end = ends[0] if ends else twin["global_step"]
    higher = record["target"]["higher_is_better"]
    at_switch = [e["metric"] for e in twin["evals"] if e["step"] == step]
    later = [e["metric"] for e in twin["evals"] if step < e["step"] <= end]
    if twin["target_step"] is not None and step < twin["target_step"] <= end:
        return "false"
    if not at_switch or not later:
        return ""
    gained = _value(later[-1], higher) - _value(at_switch[0], higher)
    return "false" if gained > improvement_tolerance(record) else "right"


def twin_boundaries(record: Mapping) -> list[int]:
    """Cycle boundaries of a run without switching: the planned ones."""
    return [int(b) for b in record["planned_boundaries"]]


def twin_key(spec: Mapping) -> str:
    """The key of the counterfactual run (early switching off) of a run's spec."""
    return RunSpec(**{**spec, "variant": COUNTERFACTUAL}).key


def run_row(record: Mapping, records: Mapping[str, Mapping]) -> dict[str, Any]:
    """One CSV row: the run's design and measures."""
    spec = record["spec"]
    before, after = recovery(record)
    switches = [r for r in record["resets"] if r["early_switch"]]
    judged = ""
    if spec["variant"] in DETECTOR_VARIANTS:
        judged = judge_first_switch(record, records.get(twin_key(spec)))
    first = record["resets"][0] if record["resets"] else {}
    return {
        "workload": spec["workload"],
        "scenario": spec["scenario"],
        "variant": spec["variant"],
        "seed": spec["seed"],
        "reached": record["target_step"] is not None,
        "steps_to_target": steps_to_target(record),
        "seconds_to_target": seconds_to_target(record),
        "global_step": record["global_step"],
        "stop_reason": record["stop_reason"],
        "resets": len(record["resets"]),
        "early_switches": len(switches),
        "first_reset_step": first.get("step", ""),
        "first_reset_tau": first.get("tau", ""),
        "first_reset_early": first.get("early_switch", ""),
        "metric_before_first_reset": before,
        "metric_after_first_reset": after,
        "first_switch_judged": judged,
        "missed_switches": missed_switches(record),
        "submission_time": record["submission_time"],
        "wall_time": record["wall_time"],
    }


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# --------------------------------------------------------------------------- aggregates


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt_steps(values: Sequence[float]) -> str:
    """Median [min-max] of step counts; 'never' for inf, 'n/a' for no runs."""
    if not values:
        return "n/a"

    def one(v: float) -> str:
        return "never" if v == INF else f"{v:.0f}"

    median = _median(sorted(values))
    return f"{one(median)} [{one(min(values))}-{one(max(values))}]"


def _fmt_seconds(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    median = _median(sorted(values))
    return "never" if median == INF else f"{median:.1f}"


def _fmt_metric(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None]
    if not values:
        return "n/a"
    text = f"{_median(finite):.3f}" if finite else "-"
    missing = len(values) - len(finite)
    return text + (f" ({missing} nan)" if missing else "")


class Comparison(NamedTuple):
    """Per-seed comparison of steps to target: how often a beat b, tied, lost."""

    better: int
    tie: int
    worse: int
    verdict: str  # "wins", "ties", "loses" (a against b)


def compare(a: Sequence[Mapping], b: Sequence[Mapping]) -> Comparison:
    """Pairs runs by seed: a is better on a seed when it reached the target in fewer
    steps (a run that never reached it is worst). The verdict is "wins" when a is better
    on more seeds than it is worse and its median is better, "loses" in the mirror case,
    "ties" otherwise."""
    by_seed = {r["spec"]["seed"]: steps_to_target(r) for r in b}
    pairs = [
        (steps_to_target(r), by_seed[r["spec"]["seed"]]) for r in a if r["spec"]["seed"] in by_seed
    ]
    better = sum(x < y for x, y in pairs)
    worse = sum(x > y for x, y in pairs)
    tie = len(pairs) - better - worse
    med_a = _median(sorted(x for x, _ in pairs))
    med_b = _median(sorted(y for _, y in pairs))
    if better > worse and med_a <= med_b:
        verdict = "wins"
    elif worse > better and med_a >= med_b:
        verdict = "loses"
    else:
        verdict = "ties"
    return Comparison(better, tie, worse, verdict)


def _cell_records(records, workload, scenario, variant) -> list[Mapping]:
    return sorted(
        (
            r
            for r in records.values()
            if (r["spec"]["workload"], r["spec"]["scenario"], r["spec"]["variant"])
            == (workload, scenario, variant)
        ),
        key=lambda r: r["spec"]["seed"],
    )


def outcome_table(records, workload, scenario, variants, reference="soft") -> list[str]:
    """Markdown rows: reach rate, steps and seconds to target, recovery, vs reference."""
    lines = [
        "| variant | reached | steps to target, median [min-max] | seconds to target "
        "(median) | first reset: step, tau (median) | metric before -> after it (median) "
        f"| vs {reference} (better/tie/worse seeds) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    ref = _cell_records(records, workload, scenario, reference)
    for variant in variants:
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        steps = [steps_to_target(r) for r in runs]
        seconds = [seconds_to_target(r) for r in runs]
        first = [r["resets"][0] for r in runs if r["resets"]]
        reset_text = (
            f"{_median([f['step'] for f in first]):.0f}, "
            f"{_median([f['tau'] for f in first if f['tau'] is not None]):.2f}"
            if first
            else "no reset"
        )
        if any(f["early_switch"] for f in first):
            reset_text += f" ({sum(f['early_switch'] for f in first)} early)"
        rec = [recovery(r) for r in runs if r["resets"]]
        rec_text = (
            f"{_fmt_metric([b for b, a in rec])} -> {_fmt_metric([a for b, a in rec])}"
            if rec
            else "n/a"
        )
        if variant == reference or not ref:
            versus = ""
        else:
            c = compare(runs, ref)
            versus = f"{c.verdict} ({c.better}/{c.tie}/{c.worse})"
        reached = sum(s < INF for s in steps)
        lines.append(
            f"| {VARIANTS[variant].label} | {reached}/{len(runs)} | {_fmt_steps(steps)} "
            f"| {_fmt_seconds(seconds)} | {reset_text} | {rec_text} | {versus} |"
        )
    return lines


def switch_table(records, workload, scenario, rows: Mapping[str, Mapping]) -> list[str]:
    """Markdown rows about the detector: switches, judged first switches, misses."""
    lines = [
        "| detector | early switches per run (median [min-max]) | first switch false "
        "/ right / not judged | missed switches (runs with any) |",
        "| --- | --- | --- | --- |",
    ]
    for variant in (*DETECTOR_VARIANTS, COUNTERFACTUAL):
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        counts = [sum(r2["early_switch"] for r2 in r["resets"]) for r in runs]
        judged = [rows[r["key"]]["first_switch_judged"] for r in runs]
        with_switch = sum(c > 0 for c in counts)
        missed = [rows[r["key"]]["missed_switches"] for r in runs]
        judge_text = (
            f"{judged.count('false')} / {judged.count('right')} / "
            f"{with_switch - judged.count('false') - judged.count('right')}"
            if variant != COUNTERFACTUAL
            else "-"
        )
        lines.append(
            f"| {VARIANTS[variant].label} | {_fmt_steps(counts)} | {judge_text} "
            f"| {sum(missed)} ({sum(m > 0 for m in missed)}/{len(runs)}) |"
        )
    return lines


# --------------------------------------------------------------------------- figures


def median_curve(
    runs: Sequence[Mapping],
) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, median, low, high) of the target metric over seeds at each evaluation step.

    A run that stopped (target reached or plan ended) holds its last value afterwards;
    non-finite values are left out of that step's statistics.
    """
    steps = sorted({e["step"] for r in runs for e in r["evals"]})
    med, low, high = [], [], []
    for step in steps:
        values = []
        for r in runs:
            upto = [e["metric"] for e in r["evals"] if e["step"] <= step]
            if upto and upto[-1] is not None:
                values.append(upto[-1])
        med.append(_median(sorted(values)))
        low.append(min(values) if values else math.nan)
        high.append(max(values) if values else math.nan)
    return steps, med, low, high


def plot_cell(ax, records, workload, scenario, variants, colors) -> None:
    """Median curve and min-max band per variant; resets as markers on each run."""
    target = None
    for variant in variants:
        runs = _cell_records(records, workload, scenario, variant)
        if not runs:
            continue
        target = runs[0]["target"]
        steps, med, low, high = median_curve(runs)
        color = colors[variant]
        ax.plot(steps, med, color=color, label=VARIANTS[variant].label, lw=1.5)
        ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        for r in runs:
            for reset in r["resets"]:
                y = [e["metric"] for e in r["evals"] if e["step"] <= reset["step"]]
                if y and y[-1] is not None:
                    marker = "v" if reset["early_switch"] else "|"
                    ax.plot(reset["step"], y[-1], marker, color=color, ms=6, alpha=0.6)
    if target is not None:
        ax.axhline(target["value"], color="black", ls="--", lw=0.8, label="target")
        ax.set_ylabel(target["metric"])
        if not target["higher_is_better"]:
            ax.set_yscale("log")
    ax.set_title(f"{workload}: {SCENARIOS[scenario].label}", fontsize=9)
    ax.set_xlabel("step")


def draw_figures(records, workloads, scenarios, out_dir: Path) -> list[Path]:
    """One figure per workload and group (strategies, ablations): a panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    colors = {v: cmap(i % 10) for i, v in enumerate(VARIANTS)}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for group, variants in (
        ("strategies", STRATEGY_VARIANTS),
        ("ablations", ("soft", *[k for k, v in VARIANTS.items() if v.group == "ablation"])),
    ):
        for workload in workloads:
            present = [
                s
                for s in scenarios
                if any(_cell_records(records, workload, s, v) for v in variants)
            ]
            if not present:
                continue
            fig, axes = plt.subplots(
                1, len(present), figsize=(5 * len(present), 3.8), squeeze=False
            )
            for ax, scenario in zip(axes[0], present, strict=True):
                plot_cell(ax, records, workload, scenario, variants, colors)
            axes[0][0].legend(fontsize=7, loc="best")
            fig.suptitle(
                f"{workload}: median over seeds, band min-max; | planned reset, v early switch",
                fontsize=9,
            )
            fig.tight_layout()
            path = out_dir / f"{group}_{workload}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- report


def reading(records, rows, workloads, scenarios) -> list[str]:
    """Sentences derived from the numbers: where soft wins, ties, loses; which decision
    changes the outcome (an ablation that does not tie with soft somewhere)."""
    lines = ["### Where soft reset wins, ties or loses", ""]
    for workload in workloads:
        for scenario in scenarios:
            soft = _cell_records(records, workload, scenario, "soft")
            if not soft:
                continue
            parts = []
            for other in ("none", "full", "params_only"):
                runs = _cell_records(records, workload, scenario, other)
                if runs:
                    c = compare(soft, runs)
                    parts.append(f"{c.verdict} against {other} ({c.better}/{c.tie}/{c.worse})")
            lines.append(
                f"- {workload}, {SCENARIOS[scenario].label}: soft " + "; ".join(parts) + "."
            )
    lines += ["", "### Which decisions matter (ablation against soft's defaults)", ""]
    for variant, v in VARIANTS.items():
        if v.group != "ablation":
            continue
        verdicts = []
        for workload in workloads:
            for scenario in scenarios:
                runs = _cell_records(records, workload, scenario, variant)
                soft = _cell_records(records, workload, scenario, "soft")
                if runs and soft:
                    c = compare(runs, soft)
                    if c.verdict != "ties":
                        verdicts.append(
                            f"{c.verdict} on {workload} {SCENARIOS[scenario].label} "
                            f"({c.better}/{c.tie}/{c.worse})"
                        )
        text = "; ".join(verdicts) if verdicts else "ties with the defaults everywhere"
        lines.append(f"- {v.label}: {text}.")
    false_total = sum(r["first_switch_judged"] == "false" for r in rows.values())
    right_total = sum(r["first_switch_judged"] == "right" for r in rows.values())
    missed_total = sum(
        r["missed_switches"] for r in rows.values() if r["variant"] in DETECTOR_VARIANTS
    )
    lines += [
        "",
        f"Judged first early switches of the detector variants: {false_total} false, "
        f"{right_total} right; missed switches: {missed_total}.",
    ]
    return lines


def environment() -> str:
    import jax
    import optax

    return (
        f"Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
        f"{platform.machine()} CPU ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}"
    )


def build_tables(records, rows, workloads, scenarios) -> list[str]:
    lines = []
    for title, variants in (
        ("Reset strategies", STRATEGY_VARIANTS),
        ("Ablations of our decisions (soft with one change)", ("soft", *_ablations())),
    ):
        lines += [f"## {title}", ""]
        for workload in workloads:
            for scenario in scenarios:
                table = outcome_table(records, workload, scenario, variants)
                if len(table) > 2:
                    lines += [f"### {workload}, {SCENARIOS[scenario].label}", "", *table, ""]
    lines += ["## Early switching: false and missed switches", ""]
    for workload in workloads:
        for scenario in scenarios:
            table = switch_table(records, workload, scenario, rows)
            if len(table) > 2:
                lines += [f"### {workload}, {SCENARIOS[scenario].label}", "", *table, ""]
    return lines


def _ablations() -> list[str]:
    return [k for k, v in VARIANTS.items() if v.group == "ablation"]


DEFINITIONS = """\
- **Steps / seconds to target**: the step (and the runner's submission seconds,
  compilation included) of the first evaluation whose validation target metric passes the
  target; "never" when the run ended (plan used up) without reaching it. Medians count
  "never" as infinite. Seconds come from grid processes sharing the CPU: compare them
  within a table, not with other machines.
- **vs soft (better/tie/worse seeds)**: runs paired by seed; better = reached the target
  in fewer steps (never = worst). "wins" when better on more seeds than worse and the
  median is not worse, "loses" in the mirror case, else "ties".
- **First reset**: its step, tau, and the target metric at the last evaluation before it
  and the first evaluation after it (recovery: how much of the cycle's learning survived).
- **False switch**: the first early switch of a detector variant, judged against the same
  seed with early switching off (identical up to the switch): false when that run's
  cycle then improved the target metric by >= 1% of the target, or reached the target,
  before its planned end; right otherwise.
- **Missed switch**: a cycle that ran to a planned reset although it failed: its last
  evaluation was not better than its first by 1% of the target, or one was not finite.
"""


def write_report(
    path: Path,
    out: Path,
    records,
    rows,
    workloads,
    scenarios,
    figures: Sequence[Path],
    command: str,
) -> None:
    """The Markdown report, its figures copied beside it (``<stem>/``)."""
    fig_dir = path.parent / path.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for figure in figures:
        shutil.copy(figure, fig_dir / figure.name)
        links.append(f"![{figure.stem}]({path.stem}/{figure.name})")
    seeds = sorted({r["spec"]["seed"] for r in records.values()})
    lines = [
        "# Evidence: cyclic AdamW with soft reset, over seeds",
        "",
        f"Generated by `{command}` ({len(records)} runs; {environment()}). Every number "
        "below comes from the run records in the results directory; rerunning the command "
        "reproduces them (finished runs are reused).",
        "",
        "## Design",
        "",
        f"- Workloads: {', '.join(workloads)} (embedded, `scripts/workloads.py`), seeds "
        f"{', '.join(map(str, seeds))}.",
        *(
            f"- Scenario *{s.label}*: {s.description}."
            for k, s in SCENARIOS.items()
            if k in scenarios
        ),
        "- Variants: "
        + "; ".join(f"`{k}` = {v.label} {dict(v.overrides) or ''}" for k, v in VARIANTS.items())
        + ".",
        "- Each run stops at the target, as a scored AlgoPerf run does, or when its plan ends.",
        "",
        "## Definitions",
        "",
        DEFINITIONS,
        "## Reading",
        "",
        *reading(records, rows, workloads, scenarios),
        "",
        "## Learning curves",
        "",
        *links,
        "",
        *build_tables(records, rows, workloads, scenarios),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def aggregate(
    out: Path, specs: Sequence[RunSpec], report: Path | None, command: str
) -> dict[str, Any]:
    """runs.csv, tables.md, figures and (optionally) the report, from the records."""
    records = load_records(out, specs)
    rows = {key: run_row(r, records) for key, r in records.items()}
    write_runs_csv(out / "runs.csv", [rows[s.key] for s in specs if s.key in rows])
    workloads = list(dict.fromkeys(s.workload for s in specs))
    scenarios = list(dict.fromkeys(s.scenario for s in specs))
    tables = build_tables(records, rows, workloads, scenarios)
    (out / "tables.md").write_text("\n".join(tables) + "\n", encoding="utf-8")
    figures = draw_figures(records, workloads, scenarios, out / "figures")
    if report is not None:
        write_report(report, out, records, rows, workloads, scenarios, figures, command)
    return {"records": records, "rows": rows, "figures": figures}


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.evidence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--grid", choices=sorted(GRIDS), default="full")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--report", type=Path, default=None, help="Markdown report path")
    parser.add_argument("--workloads", nargs="+", default=None, choices=WORKLOADS)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--redo", action="store_true", help="rerun finished runs too")
    parser.add_argument("--no_run", action="store_true", help="only aggregate the records")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = GRIDS[args.grid]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    if seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {seeds}.")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}.")
    out = args.out or ROOT / "runs" / f"evidence-{args.grid}"
    report = args.report
    if report is None and args.grid == "full" and args.out is None:
        report = ROOT / "docs" / "evidence.md"
    specs = grid(
        args.workloads or preset["workloads"],
        args.scenarios,
        args.variants,
        range(seeds),
        tiny=preset["tiny"],
    )
    errors = [] if args.no_run else run_grid(specs, out, args.workers, args.redo)
    command = "python -m scripts.evidence " + " ".join(argv if argv is not None else sys.argv[1:])
    result = aggregate(out, specs, report, command.strip())
    print(f"{len(result['records'])} records -> {out}/runs.csv, {out}/tables.md, {out}/figures/")
    if report is not None:
        print(f"report -> {report}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
