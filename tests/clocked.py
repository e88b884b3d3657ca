"""A whole run of the submission on a simulated clock, recorded step by step: shared by the
tests of the first cycle on slow hardware (`test_fit_first_cycle.py`, `test_cooldown.py`)."""

from cyclic_soft_reset import submission
from scripts.local import runner, workloads

# digits with a small network and an unreachable target: the run goes on until the budget.
OPTIONS = {**workloads.tiny_overrides("digits"), "step_hint": 120, "eval_every_steps": 6}
STEP_TIME = {"0.5x": 2.0, "1x": 1.0, "2x": 0.5, "3x": 1 / 3}  # Step time -> clock speed.


def run_on_clock(speed, hyperparameters, noise=0.0, seed=0, **kwargs):
    """The defaults and `hyperparameters` (None: the defaults alone) on hardware `speed` x
    the reference (step times x exp(noise x N(0, 1)), drawn from `seed`; `kwargs` to
    `runner.train_once`): (result, submission seconds since the start after each step,
    learning rate of each step's update, budget)."""
    workload = workloads.make_workload("digits", **OPTIONS, validation_target_value=1.01)
    clock = runner.reference_clock(workload, speed, noise=noise, seed=seed)
    start = clock.now()  # A simulated clock starts far from 0 (`clocks.SimulatedClock`).
    spent, lr = {}, {}

    def after_step(global_step, optimizer_state, *_):
        spent[global_step] = clock.now() - start
        lr[global_step - 1] = float(optimizer_state[0].opt_state.hyperparams["learning_rate"])

    result = runner.train_once(
        workload,
        submission,
        hyperparameters,
        0,
        workload_name="digits",
        stop_at_target=False,
        clock=clock,
        hooks=runner.RunnerHooks(after_step=after_step),
        **kwargs,
    )
    return result, spent, lr, 1.5 * workload.max_allowed_runtime_sec
