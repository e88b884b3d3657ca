"""The method's gates (docs/METHOD.md section 7, v3), read from the calibrated score grid.

Do no harm first, rescue second, judged as the benchmark judges: every gate compares the
default with AlgoPerf's NAdamW baseline (or the default with `full` resets) on the same
problems and seeds, by the seeds reaching the target and the median submission time to it,
and no problem but the injected failure may see a rollback that discards learning (restores a
state worse than the best the cycle had reached).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from scripts.experiments.evidence_measures import (
    improvement_tolerance,
    judge_first_switch,
    stopped_a_reaching_cycle,
)
from scripts.experiments.profiles import median_time, time_to_target

# The default may be this much slower than the baseline on a healthy problem.
HEALTHY_SLACK = 1.05
# Its score may be this much below the best variant's.
SCORE_SLACK = 0.02


class Gate(NamedTuple):
    """One gate on one problem: what it asks, the numbers, whether it holds."""

    name: str
    problem: str
    numbers: str
    holds: bool


def runs_of(records: Mapping[str, Mapping], workload: str, scenario: str, variant: str):
    """The records of one problem and variant, by seed."""
    return sorted(
        (
            r
            for r in records.values()
            if (r["spec"]["workload"], r["spec"]["scenario"], r["spec"]["variant"])
            == (workload, scenario, variant)
        ),
        key=lambda r: r["spec"]["seed"],
    )


def reach_and_median(runs: Sequence[Mapping]) -> tuple[int, int, float]:
    """(seeds reaching the target, seeds, median time to target: inf when half missed)."""
    times = [time_to_target(r) for r in runs]
    return sum(math.isfinite(t) for t in times), len(times), median_time(times)


def _fmt(reach: tuple[int, int, float]) -> str:
    k, n, t = reach
    return f"{k}/{n}, median {t:.3g} s" if math.isfinite(t) else f"{k}/{n}, median never"


def rolled_back_learners(record: Mapping) -> int:
    """Rollbacks that discarded learning: the cycle had an evaluation better than the state
    the rollback restored by more than 1% of the target (`improvement_tolerance`:
    evaluation noise is not learning). The restored state's metric is the record's
    `restored_metric` (v3: the cycle's best with `rollback_to = "best"`); a record without
    it restored the cycle's start, the last evaluation before the cycle began (or the run's
    first). An evaluation no better than the record's `unsound_metric` (v4: the best state
    not kept as the rollback point because its norm was out of bounds) is the failure's,
    not learning."""
    higher = record["target"]["higher_is_better"]
    margin = improvement_tolerance(record)
    better = (lambda a, b: a > b + margin) if higher else (lambda a, b: a < b - margin)
    evals = [e for e in record["evals"] if e["metric"] is not None]
    starts = [0] + [r["step"] for r in record["resets"]]
    count = 0
    for start, reset in zip(starts, record["resets"], strict=False):
        if not reset.get("rolled_back", False):
            continue
        restored = reset.get("restored_metric")
        if restored is None:
            before = [e["metric"] for e in evals if e["step"] <= start] or [
                e["metric"] for e in evals[:1]
            ]
            restored = before[-1] if before else None
        inside = [e["metric"] for e in evals if start < e["step"] <= reset["step"]]
        unsound = reset.get("unsound_metric")
        learned = [m for m in inside if unsound is None or better(m, unsound)]
        if restored is not None and any(better(m, restored) for m in learned):
            count += 1
    return count


def improved_rollbacks(record: Mapping) -> int:
    """Rolled-back cycles that had improved on their start (any evaluation inside better
    than the last before the cycle began, by the tolerance), whatever was restored."""
    return rolled_back_learners(
        {
            **record,
            "resets": [
                {k: v for k, v in r.items() if k != "restored_metric"} for r in record["resets"]
            ],
        }
    )


def gates(
    records: Mapping[str, Mapping],
    problems: Sequence[tuple[str, str]],
    default: str,
    scores: Mapping[str, float],
    full: str = "default-full",
    rivals: Sequence[str] = ("baseline",),
    paired: Mapping[str, Mapping] | None = None,
) -> list[Gate]:
    """The gates for `default` over the grid's `problems` (docs/METHOD.md section 7):
    against each of `rivals` (other submissions: AlgoPerf's baseline, the field's leader)
    on reach everywhere and on time where healthy (there, against the baseline, on the
    `paired` records' seeds where they hold the problem: `design.HEALTHY_GATE_SEEDS`);
    against `full`, the default's plan with full resets, after the injected failure; the
    score above every rival's and within SCORE_SLACK of the best of ours. A comparison with
    a side that has no runs never holds."""
    out = []
    for workload, scenario in problems:
        name = f"{workload} {scenario}"
        for rival in rivals:
            source = records
            if rival == "baseline" and runs_of(paired or {}, workload, scenario, rival):
                source = paired
            ours = reach_and_median(runs_of(source, workload, scenario, default))
            out.append(_versus(ours, default, rival, source, workload, scenario))
        ours = reach_and_median(runs_of(records, workload, scenario, default))
        if scenario == "failed":
            rescue = reach_and_median(runs_of(records, workload, scenario, full))
            numbers = f"ours {_fmt(ours)}; {full} {_fmt(rescue)}"
            holds = ours[1] > 0 and rescue[1] > 0 and ours[0] >= rescue[0]
            out.append(Gate("failed first cycle: reach >= full", name, numbers, holds))
            # The injected failure is exempt from the rollback gate: a 1000x cycle
            # collapses, then its decay brings it back above its start into a basin that
            # plateaus short of the target; its rollback is the rescue (METHOD.md section 7).
            continue
        runs = runs_of(records, workload, scenario, default)
        learners = sum(rolled_back_learners(r) for r in runs)
        improved = sum(improved_rollbacks(r) for r in runs)
        numbers = (
            f"{learners} rollbacks discarded learning ({improved} rolled-back cycles had "
            "improved on their start)"
        )
        out.append(Gate("no rollback discards learning", name, numbers, learners == 0))
    if scores:
        out += _score_gates(scores, default, rivals)
    return out


def _versus(ours, default: str, rival: str, records, workload: str, scenario: str) -> Gate:
    """Reach >= the rival's on the problem; where healthy, against AlgoPerf's baseline
    (whose cycle the default's planned cycle is), also time <= HEALTHY_SLACK x, the time
    paired on the seeds the baseline reaches (`paired_medians`)."""
    theirs = reach_and_median(runs_of(records, workload, scenario, rival))
    name = f"{workload} {scenario}"
    compared = ours[1] > 0 and theirs[1] > 0
    if scenario in ("healthy", "noisy") and rival == "baseline":
        mine, base, n = paired_medians(records, workload, scenario, default, rival)
        ratio = mine / base if math.isfinite(base) and n else math.nan
        holds = compared and ours[0] >= theirs[0]
        holds = holds and (not math.isfinite(base) or mine <= HEALTHY_SLACK * base)
        numbers = (
            f"ours {_fmt(ours)}; {rival} {_fmt(theirs)}; on the {n} seeds {rival} reaches, "
            f"medians {mine:.3g} s and {base:.3g} s, ratio {ratio:.2f}"
        )
        return Gate(f"healthy: reach >= {rival}, time <= 1.05x", name, numbers, holds)
    numbers = f"ours {_fmt(ours)}; {rival} {_fmt(theirs)}"
    return Gate(f"reach >= {rival}", name, numbers, compared and ours[0] >= theirs[0])


def paired_medians(records, workload: str, scenario: str, ours: str, reference: str):
    """(ours' median t, the reference's median t, n) over the n seeds on which the reference
    reached the target (ours infinite where it missed). The healthy time gate asks whether,
    where the baseline's cycle gets there, ours gets there as soon; `reach >=` asks the rest.
    Over all seeds, with misses infinite, a median near half the seeds reaching jumps by the
    whole rescue when one side reaches one seed fewer inside the planned cycle (digit_sums:
    the baseline reaches 55 of 100)."""
    mine = {
        r["spec"]["seed"]: time_to_target(r) for r in runs_of(records, workload, scenario, ours)
    }
    ref = {
        r["spec"]["seed"]: time_to_target(r)
        for r in runs_of(records, workload, scenario, reference)
    }
    seeds = [s for s, t in ref.items() if math.isfinite(t) and s in mine]
    if not seeds:
        return math.nan, math.nan, 0
    return (
        median_time([mine[s] for s in seeds]),
        median_time([ref[s] for s in seeds]),
        len(seeds),
    )


def _score_gates(scores: Mapping[str, float], default: str, rivals: Sequence[str]) -> list[Gate]:
    """The score above every rival's; within SCORE_SLACK of the best of ours."""
    mine = scores.get(default, -math.inf)
    out = []
    for rival in (r for r in rivals if r in scores):
        numbers = f"ours {mine:.3f}; {rival} {scores[rival]:.3f}"
        out.append(Gate(f"score above {rival}'s", "all", numbers, mine > scores[rival]))
    ours = {v: x for v, x in scores.items() if v not in rivals}
    if ours:
        best = max(ours, key=ours.get)
        numbers = f"ours {mine:.3f}; best of ours {best} {ours[best]:.3f}"
        holds = mine >= ours[best] - SCORE_SLACK
        out.append(Gate("score within 0.02 of the best of ours", "all", numbers, holds))
    return out


def gates_lines(gate_list: Sequence[Gate]) -> list[str]:
    """The gates as a Markdown table."""
    lines = ["| gate | problem | numbers | holds |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {g.name} | {g.problem} | {g.numbers} | {'yes' if g.holds else '**no**'} |"
        for g in gate_list
    ]
    return lines


def switch_gates(
    records: Mapping[str, Mapping],
    problems: Sequence[tuple[str, str]],
    subject: str,
    twin: str,
) -> list[Gate]:
    """Per problem with twin runs: no first early switch of `subject` ended a cycle that its
    `twin` (the same run with the detector off: identical up to that switch) carried on to
    the target (`stopped_a_reaching_cycle`)."""
    out = []
    for workload, scenario in problems:
        twins = {r["spec"]["seed"]: r for r in runs_of(records, workload, scenario, twin)}
        runs = [
            r for r in runs_of(records, workload, scenario, subject) if r["spec"]["seed"] in twins
        ]
        if not twins or not runs:
            continue
        switched = sum(any(x["early_switch"] for x in r["resets"]) for r in runs)
        stopped = sum(stopped_a_reaching_cycle(r, twins[r["spec"]["seed"]]) for r in runs)
        numbers = f"{stopped} of {switched} first switches ended a cycle {twin} took to the target"
        name = "no switch stops a cycle that reaches the target"
        out.append(Gate(name, f"{workload} {scenario}", numbers, stopped == 0))
    return out


def switch_lines(
    records: Mapping[str, Mapping],
    problems: Sequence[tuple[str, str]],
    subject: str,
    twin: str,
) -> list[str]:
    """Early switches of `subject` per problem, its first switches judged against `twin`
    (the same run with the detector off: identical up to the first switch)."""
    lines = [
        f"| problem | switches per run ({subject}) | first switches false / judged |",
        "| --- | --- | --- |",
    ]
    for workload, scenario in problems:
        runs = runs_of(records, workload, scenario, subject)
        twins = {r["spec"]["seed"]: r for r in runs_of(records, workload, scenario, twin)}
        if not runs:
            continue
        switches = [sum(x["early_switch"] for x in r["resets"]) for r in runs]
        verdicts = [judge_first_switch(r, twins.get(r["spec"]["seed"])) for r in runs]
        judged = [v for v in verdicts if v]
        false = sum(v == "false" for v in judged)
        mean = sum(switches) / len(switches)
        lines.append(f"| {workload} {scenario} | {mean:.1f} | {false} / {len(judged)} |")
    return lines
