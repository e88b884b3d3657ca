"""The packaged submission, imported the way AlgoPerf's submissions repository runs it.

The runner turns `submissions/self_tuning/<name>/submission.py` into the module
`submissions.self_tuning.<name>.submission` and imports it with the repository root as
the working directory; `submissions/` and `self_tuning/` hold no `__init__.py` there
(namespace packages), each submission folder does. The packaged copy must train exactly
like the project's own submission.py without the project root on the path.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from cyclic_soft_reset import hyperparameters as hp
from scripts import package_submission

pytestmark = pytest.mark.slow  # Subprocesses, fresh processes or AlgoPerf itself.

ROOT = Path(__file__).resolve().parents[1]
NAME = "cyclic_test"
OWN_TOP_LEVEL = tuple(m.removesuffix(".py") for m in package_submission.MODULES) + tuple(
    package_submission.PACKAGES
)


def _package_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "scripts.package_submission", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


AUTHORS = ("--authors", "A. Author", "--affiliations", "Some University")


def _expected_files():
    files = {*package_submission.MODULES, "__init__.py", "submission_info.yml"}
    for package in package_submission.PACKAGES:
        files |= {
            str(p.relative_to(ROOT))
            for p in (ROOT / package).rglob("*.py")
            if "__pycache__" not in p.parts
        }
    if (ROOT / "tuning_search_space.json").is_file():
        files.add("tuning_search_space.json")
    return files


def test_package_holds_the_submission_and_its_metadata(tmp_path):
    proc = _package_cli("--out", tmp_path, "--name", NAME, *AUTHORS)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "submissions" / "self_tuning" / NAME  # The repository's layout.
    assert proc.stdout.strip() == str(target)
    # The pull request's title and the YAML block its template check reads.
    assert "[submission] " in proc.stderr and "`evaluation` branch" in proc.stderr
    block = proc.stderr[proc.stderr.index("```yaml\n") + 8 : proc.stderr.rindex("\n```")]
    assert yaml.safe_load(block)["submission_folder"] == NAME
    written = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert written == _expected_files()  # No requirements.txt: AlgoPerf's own are enough.
    assert package_submission.check_package(tmp_path, NAME) == []
    for name in written - {"__init__.py", "submission_info.yml"}:
        assert (target / name).read_bytes() == (ROOT / name).read_bytes(), name
    info = yaml.safe_load((target / "submission_info.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert info == {
        "submission_name": package_submission.SUBMISSION_NAME,
        "submission_folder": NAME,  # The folder's name within submissions/self_tuning/.
        "authors": "A. Author",
        "affiliations": "Some University",
        "version": project["version"],
        "ruleset": "self-tuning",
        "framework": "JAX",
        "description": project["description"],
    }
    assert set(info) >= set(package_submission.REQUIRED_FIELDS)
    # Packaging again replaces the earlier package.
    (target / "stale.py").write_text("")
    assert _package_cli("--out", tmp_path, "--name", NAME, *AUTHORS).returncode == 0
    assert not (target / "stale.py").exists()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ((), "--authors"),
        (("--authors", "A. Author"), "--affiliations"),
        (("--authors", " ", "--affiliations", "U"), "--authors"),
    ],
)
def test_package_refuses_to_write_without_authors_and_affiliations(tmp_path, args, flag):
    proc = _package_cli("--out", tmp_path, *args)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert f"{flag} is required" in error and "--affiliations" in error
    assert list(tmp_path.iterdir()) == []


def test_check_package_names_what_the_repository_would_reject(tmp_path):
    target = package_submission.package(tmp_path, NAME, authors="A", affiliations="U")
    (target / "requirements.txt").write_text("scipy\n")
    (target / "reset" / "extra.py").write_text("import scipy\nfrom . import moments\n")
    info = (target / "submission_info.yml").read_text()
    (target / "submission_info.yml").write_text(
        info.replace('ruleset: "self-tuning"', 'ruleset: "external"').replace('authors: "A"', "")
    )
    problems = package_submission.check_package(tmp_path, NAME)
    assert any("requirements.txt" in p for p in problems)
    assert any("imports scipy" in p for p in problems)
    assert any("ruleset is 'external'" in p for p in problems)
    assert any("authors is missing" in p for p in problems)
    (target / "submission.py").unlink()
    assert any(
        "submission.py is missing" in p for p in package_submission.check_package(tmp_path, NAME)
    )


@pytest.mark.parametrize("name", ["bad-name", "1st", "a.b", "", "Cyclic_AdamW"])
def test_package_refuses_a_name_that_is_not_a_module_name(tmp_path, name):
    proc = _package_cli("--out", tmp_path, "--name", name, *AUTHORS)
    assert proc.returncode == 2
    assert "--name must be a lowercase Python identifier" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_package_refuses_to_replace_a_foreign_folder(tmp_path):
    foreign = tmp_path / "submissions" / "self_tuning" / NAME
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    proc = _package_cli("--out", tmp_path, "--name", NAME, *AUTHORS)
    assert proc.returncode == 2 and "not a package written by this script" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


# A run of 15 steps (a soft reset at step 10: step_hint 30, 3 cycles), evals every 5 steps,
# by the local runner (train_once) through the entry points of `module`; writes the
# params, the resets and what it imported. Both modes run as if the project were not
# installed: the editable install cannot answer for any of its names (it would otherwise
# resolve them). "packaged": nothing of the project can be imported at all. "project"
# (AlgoPerf's `import submission` from the checkout): only submission.py's fallback can
# make the package cyclic_soft_reset, whose modules are then found in its folder alone.
_TRAIN = """
import importlib, importlib.abc, importlib.machinery, json, sys
from pathlib import Path

mode, module_name, out = sys.argv[1:4]
PACKAGE = "cyclic_soft_reset"
blocked = {{*{own!r}, PACKAGE}} if mode == "packaged" else set({own!r}) - {{"submission"}}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in blocked or (top == PACKAGE and path is None):
            raise ModuleNotFoundError(f"blocked: {{name}}", name=name)
        if top == PACKAGE:  # A module of the package the fallback made: in its folder only.
            return importlib.machinery.PathFinder.find_spec(name, path)
        return None


sys.meta_path.insert(0, Blocker())
module = importlib.import_module(module_name)  # What submission_runner.py does.
ours = [n for n in sys.modules if n.split(".")[0] in {{*{own!r}, PACKAGE}}]
package = sys.modules.get(PACKAGE)
if mode == "packaged":
    # The local runner and the workloads import the stand-in spec from cyclic_soft_reset:
    # the submission's own (both are algoperf.spec in AlgoPerf).
    folder = module_name.rpartition(".")[0]
    sys.modules[PACKAGE] = sys.modules[folder]
    sys.modules[PACKAGE + ".algoperf_compat"] = sys.modules[folder + ".algoperf_compat"]
import jax
import numpy as np
from scripts.local import runner
from scripts.local.workloads.tiny import TinyWorkload

workload = TinyWorkload(step_hint=30, batch_norm=True)
result = runner.train_once(workload, module, {hparams!r}, 0, global_batch_size=32, eval_every_steps=5,
                           max_global_steps=15)
assert result.stop_reason == "max_steps" and len(result.eval_results) == 3
leaves = jax.tree.leaves(jax.device_get((result.params, result.model_state)))
np.savez(out + ".npz", *leaves)
records = result.metrics_logger.records
root = {root!r}
json.dump({{
    "module_file": module.__file__,
    "resets": [(s, m["reset/cycle"]) for s, m, _ in records if "reset/cycle" in m],
    "imported_by_submission": sorted(ours),
    "package": package and {{"path": list(package.__path__), "file": getattr(package, "__file__", None)}},
    "one_submission": sys.modules.get("submission") is sys.modules.get(PACKAGE + ".submission"),
    "package_files": sorted(m.__file__ for n, m in sys.modules.items()
                            if n.split(".")[0] in ("submissions", PACKAGE) and getattr(m, "__file__", None)),
    "root_on_path": any(Path(p or ".").resolve() == Path(root) for p in sys.path),
}}, open(out + ".json", "w"))
"""  # noqa: E501


def _start(mode, module_name, cwd, pythonpath, out):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env.update(PYTHONPATH=os.pathsep.join(map(str, pythonpath)), JAX_PLATFORMS="cpu")
    # v2's plan of 3 cycles: a reset inside 15 steps (the default plans one cycle).
    script = _TRAIN.format(own=OWN_TOP_LEVEL, root=str(ROOT), hparams=dict(hp.V2_DEFAULTS))
    return subprocess.Popen(
        [sys.executable, "-c", script, mode, module_name, str(out)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, out):
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    with np.load(f"{out}.npz") as leaves:
        arrays = [leaves[f"arr_{i}"] for i in range(len(leaves.files))]
    return arrays, json.loads(Path(f"{out}.json").read_text())


def test_packaged_submission_trains_bit_for_bit_like_the_project_one(tmp_path):
    tree = tmp_path / "algoperf_submissions"  # The submissions repository's root.
    package_submission.package(tree, NAME, authors="A. Author", affiliations="U")
    # The local runner and the workloads, away from the project (scripts/ is not packaged).
    neutral = tmp_path / "neutral"
    (neutral / "scripts").mkdir(parents=True)
    (neutral / "scripts" / "__init__.py").write_text("")
    shutil.copytree(
        ROOT / "scripts" / "local",
        neutral / "scripts" / "local",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    module_name = f"submissions.self_tuning.{NAME}.submission"
    # Both runs at once: the packaged one from the tree's root without the project on the
    # path (python -c puts the working directory first, as python -m submission_runner
    # does), the reference with the project's own submission.py loaded as AlgoPerf's
    # runner loads it from the project root (--submission_path=submission.py).
    packaged = _start("packaged", module_name, tree, [neutral], tmp_path / "packaged")
    project = _start("project", "submission", ROOT, [ROOT, neutral], tmp_path / "project")
    ours, ours_info = _finish(packaged, tmp_path / "packaged")
    theirs, theirs_info = _finish(project, tmp_path / "project")

    package_dir = tree / "submissions/self_tuning" / NAME
    assert ours_info["module_file"] == str(package_dir / "submission.py")
    assert not ours_info["root_on_path"]
    # The packaged submission imported nothing of the project's own, not even the
    # package cyclic_soft_reset: no fallback ran.
    assert ours_info["imported_by_submission"] == [] and ours_info["package"] is None
    assert len(ours_info["package_files"]) >= 10
    assert all(f.startswith(str(package_dir) + os.sep) for f in ours_info["package_files"])
    # The project's submission.py, loaded as the top-level module `submission`, made the
    # checkout the package cyclic_soft_reset (its fallback: the root's folder alone, where
    # the editable install's package would add its path hook) and is that package's
    # `submission` too; its modules came from the root, none under a top-level name.
    assert theirs_info["module_file"] == str(ROOT / "submission.py")
    assert theirs_info["package"] == {"path": [str(ROOT)], "file": None}
    assert theirs_info["one_submission"]
    assert [n for n in theirs_info["imported_by_submission"] if "." not in n] == [
        "cyclic_soft_reset",
        "submission",
    ]
    assert len(theirs_info["package_files"]) >= 10
    assert all(Path(f).parent.is_relative_to(ROOT) for f in theirs_info["package_files"])
    # A reset happened, and the params after 15 steps are identical.
    assert ours_info["resets"] == theirs_info["resets"] == [[10, 1]]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
