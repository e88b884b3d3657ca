"""The local runner's random keys against AlgoPerf's own runner, in each ruleset.

In AlgoPerf's venv (`make algoperf-checks` runs it there, with no test skipped), AlgoPerf
0.6's `submission_runner.score_submission_on_workload` runs a recording workload and
submission until the first data selection: the keys it hands to `_build_input_queue`,
`init_model_fn`, `init_optimizer_state` and `data_selection` (step 0) must be the local
runner's `derive_rngs` and `step_rngs` for the same seed and ruleset.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

algoperf = pytest.importorskip("algoperf")

from scripts.local import runner  # noqa: E402

pytestmark = pytest.mark.slow  # AlgoPerf's runner imports torch and its workloads.

ALGOPERF_DIR = Path(algoperf.__file__).resolve().parents[1]

# A submission that records the keys it is given and stops the run at the first batch.
RECORDER = """
import numpy as np
KEYS = {}

class Stop(Exception):
    pass

def get_batch_size(workload_name):
    return 8

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    KEYS["opt_init"] = np.asarray(rng)
    return None

def update_params(*args, **kwargs):
    raise Stop()

def data_selection(workload, input_queue, optimizer_state, params, model_state,
                   hyperparameters, global_step, rng):
    KEYS["data_select"] = np.asarray(rng)
    raise Stop()
"""


class RecordingWorkload:
    """Only what AlgoPerf's runner touches before the first batch; records its keys."""

    eval_batch_size = 8

    def __init__(self, keys):
        self.keys = keys

    def _build_input_queue(self, rng, split, data_dir, global_batch_size):
        self.keys["data"] = np.asarray(rng)
        return iter(())

    def init_model_fn(self, rng):
        self.keys["model_init"] = np.asarray(rng)
        return {}, None


def _algoperf_keys(tmp_path, monkeypatch, ruleset, seed):
    """The keys AlgoPerf's runner gives a submission in `ruleset` for `seed`."""
    monkeypatch.syspath_prepend(str(ALGOPERF_DIR))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import submission_runner
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["test", "--framework=jax"], known_only=True)
    monkeypatch.setattr(flags.FLAGS, "framework", "jax")
    (tmp_path / "recorder_submission.py").write_text(RECORDER)
    sys.modules.pop("recorder_submission", None)
    import recorder_submission

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"feasible_points": [0.1]}}))
    workload = RecordingWorkload(recorder_submission.KEYS)
    with pytest.raises(recorder_submission.Stop):
        submission_runner.score_submission_on_workload(
            workload,
            "mnist",
            "recorder_submission.py",
            data_dir=str(tmp_path),
            tuning_ruleset=ruleset,
            profiler=submission_runner.PassThroughProfiler(),
            tuning_search_space=str(space) if ruleset == "external" else None,
            num_tuning_trials=1,
            rng_seed=seed,
        )
    return recorder_submission.KEYS


@pytest.mark.parametrize("ruleset", ["self", "external"])
def test_local_runner_keys_are_algoperfs_in_each_ruleset(tmp_path, monkeypatch, ruleset):
    seed = 5
    theirs = _algoperf_keys(tmp_path, monkeypatch, ruleset, seed)
    data, opt_init, model_init, rng = runner.derive_rngs(seed, self_tuning=ruleset == "self")
    ours = {
        "data": data,
        "opt_init": opt_init,
        "model_init": model_init,
        "data_select": runner.step_rngs(rng, 0)[0],
    }
    assert set(theirs) == set(ours)
    for name, key in ours.items():
        np.testing.assert_array_equal(np.asarray(key), theirs[name], err_msg=name)
