"""The "use our parts in your own loop" example runs, and does what it says.

The example is the fenced python block under the heading "Use our parts in your own loop"
in docs/own-loop.md, the manual's page on using the parts in your own loop.
"""

import math
import pathlib
import re

import jax
import numpy as np
import pytest

from cyclic_soft_reset import schedules

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADING = "Use our parts in your own loop"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def example_source() -> tuple[str, str]:
    """(where it was found, the example's code): the page's first python block under
    the heading."""
    readme = ROOT / "docs" / "own-loop.md"
    text = readme.read_text()
    heading = re.search(rf"^#+\s*{re.escape(HEADING)}\s*$", text, re.MULTILINE)
    assert heading, f"docs/own-loop.md has no heading {HEADING!r}"
    block = BLOCK.search(text, heading.end())
    assert block, f"docs/own-loop.md: no python block under the heading {HEADING!r}"
    return str(readme), block.group(1)


@pytest.fixture(scope="module")
def run():
    path, code = example_source()
    namespace = {"__name__": "own_loop_example"}
    exec(compile(code, path, "exec"), namespace)
    return namespace


def test_example_is_short_and_complete():
    _, code = example_source()
    assert len([line for line in code.splitlines() if line.strip()]) <= 50
    assert "cyclic_schedule(plan)" in code and "enter_cycle(" in code
    assert "reset.soft(alpha=0.5)" in code and "reset.tau(" in code
    assert "reset.check_cycle(" in code and "start=start" in code


def test_example_resets_at_the_planned_boundaries(run):
    plan, resets = run["plan"], run["resets"]
    assert [step for step, _, _ in resets] == [int(b) for b in plan.boundaries[1:-1]]
    for _, val_loss, tau in resets:  # real soft resets: neither kept nor restarted
        assert math.isfinite(val_loss) and 0.0 < tau < 1.0
    assert run["cycle"] == schedules.num_cycles(plan) - 1


def test_example_learning_rate_follows_the_plan(run):
    plan, history = run["plan"], run["history"]
    assert [step for step, _, _ in history] == list(range(schedules.total_steps(plan)))
    steps = np.array([step for step, _, _ in history])
    used = np.array([lr for _, _, lr in history], np.float32)
    expected = [
        float(schedules.learning_rate(t, schedules.cycle_window(plan, schedules.cycle_at(plan, t))))
        for t in steps
    ]
    np.testing.assert_allclose(used, np.float32(expected), rtol=1e-6, atol=0)
    for i in range(schedules.num_cycles(plan)):
        start, end = int(plan.boundaries[i]), int(plan.boundaries[i + 1])
        assert used[start] == 0.0  # every cycle starts at 0 ...
        peak = float(plan.peak_learning_rates[i])
        assert used[start:end].max() == pytest.approx(peak, rel=1e-2)  # ... and peaks
    (state,) = schedules.schedule_states(run["opt_state"])
    assert int(state.step) == schedules.total_steps(plan)  # stepped once per update


def test_example_trains(run):
    losses = [loss for _, loss, _ in run["history"]]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.05 * losses[0]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(run["params"]))
    # The later cycles validate better than the first one did.
    (_, first, _), (_, second, _) = run["resets"]
    assert second < first
