"""The method's gates (docs/METHOD.md section 7) on hand-made records of the score grid."""

import pytest

from scripts.experiments import gates


def _record(variant, scenario, seed, time, evals=(), resets=(), workload="digits"):
    return {
        "spec": {"workload": workload, "scenario": scenario, "variant": variant, "seed": seed},
        "target": {"metric": "validation/accuracy", "value": 0.9, "higher_is_better": True},
        "target_time": time,
        "evals": [{"step": s, "metric": m} for s, m in evals],
        "resets": list(resets),
    }


def _records(*records):
    return {f"{i}": r for i, r in enumerate(records)}


def _by_name(gate_list):
    return {(g.name.split(":")[0], g.problem): g for g in gate_list}


def test_healthy_gate_asks_reach_and_time_within_five_percent():
    fast = [_record("baseline", "healthy", s, 10.0) for s in range(3)]
    ok = [_record("default", "healthy", s, 10.4) for s in range(3)]
    slow = [_record("default", "healthy", s, 10.6) for s in range(3)]
    (held, *_) = gates.gates(_records(*fast, *ok), [("digits", "healthy")], "default", {})
    assert held.holds and "ratio 1.04" in held.numbers
    (failed, *_) = gates.gates(_records(*fast, *slow), [("digits", "healthy")], "default", {})
    assert not failed.holds and "ratio 1.06" in failed.numbers
    fewer = [*ok[:2], _record("default", "healthy", 2, None)]
    (failed, *_) = gates.gates(_records(*fast, *fewer), [("digits", "healthy")], "default", {})
    assert not failed.holds  # 2/3 against 3/3, though its median is faster.


def test_held_out_gate_counts_seeds_and_rolled_back_learners():
    learned = _record(
        "default",
        "lr300x",
        0,
        None,
        evals=[(1, 0.1), (10, 0.5), (20, 0.8)],
        resets=[{"step": 20, "rolled_back": True, "early_switch": True}],
    )
    collapsed = _record(
        "default",
        "lr300x",
        1,
        5.0,
        evals=[(1, 0.1), (10, 0.1), (20, 0.104)],  # Within 1% of the target: not learning.
        resets=[{"step": 20, "rolled_back": True, "early_switch": True}],
    )
    base = [_record("baseline", "lr300x", s, None if s else 3.0) for s in range(2)]
    found = _by_name(
        gates.gates(_records(learned, collapsed, *base), [("digits", "lr300x")], "default", {})
    )
    assert found[("reach >= baseline", "digits lr300x")].holds  # 1/2 against 1/2.
    rollback = found[("no rollback discards learning", "digits lr300x")]
    assert not rollback.holds and rollback.numbers.startswith("1 rollbacks")
    assert gates.rolled_back_learners(learned) == 1
    assert gates.rolled_back_learners(collapsed) == 0
    # Restored to the cycle's best (rollback_to = "best"): nothing learned is discarded,
    # though the cycle improved on its start.
    to_best = {**learned, "resets": [{**learned["resets"][0], "restored_metric": 0.8}]}
    assert gates.rolled_back_learners(to_best) == 0 and gates.improved_rollbacks(to_best) == 1
    to_start = {**learned, "resets": [{**learned["resets"][0], "restored_metric": 0.1}]}
    assert gates.rolled_back_learners(to_start) == 1
    # v4: the states at 0.5 and 0.8 were refused as rollback points for their norm (the
    # failure's own damage, not learning); refusing only 0.5 still discards 0.8.
    unsound = {**to_start, "resets": [{**to_start["resets"][0], "unsound_metric": 0.8}]}
    assert gates.rolled_back_learners(unsound) == 0
    partly = {**to_start, "resets": [{**to_start["resets"][0], "unsound_metric": 0.5}]}
    assert gates.rolled_back_learners(partly) == 1


def test_failed_first_cycle_is_judged_against_full_and_exempt_from_the_rollback_gate():
    rescued = _record(
        "default",
        "failed",
        0,
        2.0,
        evals=[(1, 0.1), (10, 0.6), (20, 0.1), (30, 0.85)],
        resets=[{"step": 30, "rolled_back": True, "early_switch": False}],
    )
    full = _record("default-full", "failed", 0, None)
    found = gates.gates(_records(rescued, full), [("digits", "failed")], "default", {}, rivals=())
    assert [g.name for g in found] == ["failed first cycle: reach >= full"]
    assert found[0].holds and "default-full 0/1" in found[0].numbers
    # Without `full`'s runs there is nothing to beat: the gate does not hold (it did, 0 >= 0).
    (alone,) = gates.gates(_records(rescued), [("digits", "failed")], "default", {}, rivals=())
    assert not alone.holds and "default-full 0/0" in alone.numbers


def test_every_rival_is_raced_on_every_problem_and_a_missing_rival_never_passes():
    ours = [_record("default", "lr30x", s, 2.0) for s in range(2)]
    leader = [_record("schedule-free", "lr30x", s, 1.0) for s in range(2)]
    base = [_record("baseline", "lr30x", s, None) for s in range(2)]
    found = _by_name(
        gates.gates(
            _records(*ours, *leader, *base),
            [("digits", "lr30x")],
            "default",
            {},
            rivals=("baseline", "schedule-free", "absent"),
        )
    )
    assert found[("reach >= baseline", "digits lr30x")].holds
    assert found[("reach >= schedule-free", "digits lr30x")].holds  # 2/2 against 2/2
    assert not found[("reach >= absent", "digits lr30x")].holds  # no runs: not judged a pass


@pytest.mark.parametrize(("ours", "holds"), [(0.70, True), (0.67, False)])
def test_score_within_two_hundredths_of_the_best_of_ours(ours, holds):
    scores = {"default": ours, "default-none": 0.71, "baseline": 0.9}
    above, within = gates.gates({}, [], "default", scores)
    assert within.holds is holds and "best of ours default-none 0.710" in within.numbers
    assert not above.holds and above.name == "score above baseline's"


def test_score_above_every_rival():
    scores = {"default": 0.6, "baseline": 0.5, "schedule-free": 0.7}
    found = gates.gates({}, [], "default", scores, rivals=("baseline", "schedule-free"))
    assert [(g.name, g.holds) for g in found] == [
        ("score above baseline's", True),
        ("score above schedule-free's", False),
        ("score within 0.02 of the best of ours", True),
    ]


def test_the_healthy_time_gate_reads_the_paired_seeds_where_given():
    """Three race seeds say 1.06x; the gate's 5 paired seeds (the race's and two more)
    say 1.00x: the gate holds on the paired ones, and only against the baseline."""
    base = [_record("baseline", "healthy", s, 10.0) for s in range(5)]
    ours = [_record("default", "healthy", s, t) for s, t in enumerate([10.6, 10.6] + [10.0] * 3)]
    race = _records(*base[:3], *ours[:3])
    paired = _records(*base, *ours)
    (alone, *_) = gates.gates(race, [("digits", "healthy")], "default", {})
    assert not alone.holds and "ratio 1.06" in alone.numbers
    rivals = ("baseline", "schedule-free")
    leader = [_record("schedule-free", "healthy", s, 20.0) for s in range(3)]
    found = gates.gates(
        _records(*base[:3], *ours[:3], *leader),
        [("digits", "healthy")],
        "default",
        {},
        rivals=rivals,
        paired=paired,
    )
    held, versus_leader = found[0], found[1]
    assert held.holds and "ratio 1.00" in held.numbers and "3/5" not in held.numbers
    assert "5/5" in held.numbers and "3/3" in versus_leader.numbers


def _switched(variant, seed, switch_at, target_step, boundaries=(0, 90)):
    record = _record(variant, "noisy", seed, None, workload="digit_sums")
    resets = [{"step": switch_at, "early_switch": True}] if switch_at else []
    return record | {
        "resets": resets,
        "target_step": target_step,
        "planned_boundaries": list(boundaries),
        "global_step": 200,
    }


@pytest.mark.parametrize(
    ("switch_at", "twin_target", "stopped"),
    [
        (40, 60, 1),  # the twin reached it later in the same cycle: the switch stopped it
        (40, 90, 1),  # on the cycle's last step still
        (40, 120, 0),  # the twin reached it only in a later cycle
        (40, None, 0),  # the twin never did
        (40, 30, 0),  # before the switch (then the run reached it too)
        (None, 60, 0),  # no switch: nothing judged
    ],
)
def test_the_switch_gate_counts_first_switches_that_stopped_a_reaching_cycle(
    switch_at, twin_target, stopped
):
    records = _records(
        _switched("default", 0, switch_at, None),
        _switched("default-noswitch", 0, None, twin_target),
        _switched("default", 1, 50, None),
        _switched("default-noswitch", 1, None, None),
    )
    (gate,) = gates.switch_gates(records, [("digit_sums", "noisy")], "default", "default-noswitch")
    switched = 2 if switch_at else 1
    assert gate.numbers.startswith(f"{stopped} of {switched} first switches")
    assert gate.holds == (stopped == 0)
    assert gates.switch_gates(records, [("digits", "healthy")], "default", "default-noswitch") == []


def test_the_healthy_time_is_paired_on_the_seeds_the_baseline_reaches():
    """The baseline reaches seeds 0-2 at 10 s; ours seeds 0 and 1 at 10 s and, by a rescue,
    seeds 2-4 at 30 s. Over all seeds (misses infinite) the medians are 30 s against 10 s;
    on the 3 seeds the baseline reaches, 10 s against 10 s: the gate holds. A seed the
    baseline reached and ours missed counts against ours (infinite)."""
    base = [_record("baseline", "healthy", s, 10.0 if s < 3 else None) for s in range(5)]
    ours = [_record("default", "healthy", s, 10.0 if s < 2 else 30.0) for s in range(5)]
    (held, *_) = gates.gates(_records(*base, *ours), [("digits", "healthy")], "default", {})
    assert held.holds and "on the 3 seeds baseline reaches" in held.numbers
    assert "ours 5/5, median 30 s; baseline 3/5, median 10 s" in held.numbers
    assert "medians 10 s and 10 s, ratio 1.00" in held.numbers
    pair = gates.paired_medians(_records(*base, *ours), "digits", "healthy", "default", "baseline")
    assert pair == (10.0, 10.0, 3)
    slower = [_record("default", "healthy", s, t) for s, t in enumerate([10.0, 10.6, 10.6, 9, 9])]
    (failed, *_) = gates.gates(_records(*base, *slower), [("digits", "healthy")], "default", {})
    assert not failed.holds and "ratio 1.06" in failed.numbers
    missed = [_record("default", "healthy", s, t) for s, t in enumerate([10.0, None, None, 9, 9])]
    (failed, *_) = gates.gates(_records(*base, *missed), [("digits", "healthy")], "default", {})
    assert not failed.holds  # Two of the baseline's three seeds missed: never.
