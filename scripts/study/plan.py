"""A study's plan: its contestants, its runs (one per (contestant, workload, study[, trial])),
their seeds, and the files `plan` writes: AlgoPerf's job config, our sbatch array script,
the ablations' wrapper submissions and `study.json` (what submit, status and score read).

The job config has the keys and the layout of AlgoPerf's
`scoring/utils/slurm/make_job_config.py` (`{"0": {framework, workload, dataset,
submission_path, experiment_dir, rng_seed, tuning_ruleset, num_tuning_trials[,
hparam_start_index, hparam_end_index, tuning_search_space]}, ...}`, plus `max_global_steps`
when one is set, a key AlgoPerf's `run_jobs.sh` reads), so AlgoPerf's array script could run
it unchanged. Seeds: AlgoPerf folds `hash(workload)` into a key, and Python's `hash` of a
string changes with every process (PYTHONHASHSEED); ours are a SHA-256 of (seed, workload,
study, trial): the same on every machine and in every process (`derive_seed`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.local.contestants import REGISTRY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SBATCH_TEMPLATE = HERE / "study.sbatch"
ABLATION_TEMPLATE = HERE / "ablation_submission.py.in"
STRATEGY_REGISTRY = ROOT / "reset" / "strategies.py"
MIN_INT, MAX_INT = -(2**31), 2**31 - 1  # As make_job_config.py draws seeds.
# AlgoPerf 0.6's JAX workloads and their datasets (make_job_config.py's WORKLOADS), plus
# mnist, its development workload (its dataset folder is `mnist`).
DATASETS: Mapping[str, str] = {
    "imagenet_resnet": "imagenet",
    "imagenet_vit": "imagenet",
    "fastmri": "fastmri",
    "ogbg": "ogbg",
    "wmt": "wmt",
    "librispeech_deepspeech": "librispeech",
    "criteo1tb": "criteo1tb",
    "librispeech_conformer": "librispeech",
    "mnist": "mnist",
}
RULESETS = ("self", "external")
MODES = ("venv", "docker")
DEFAULT_CONTESTANT = "ours"


class PlanError(ValueError):
    """Bad input to `plan`: the message names the field and the allowed values."""


@dataclass(frozen=True)
class Contestant:
    """One submission of the study: its name (the experiment folder's name, AlgoPerf's
    "submission" in scoring), the path the runner loads (relative to the study folder or
    the checkout, importable from either), and the hyperparameter overrides its wrapper
    sets (an ablation of ours), if any."""

    name: str
    submission_path: str
    overrides: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Job:
    """One array task: one runner call (AlgoPerf's job config entry)."""

    index: int
    contestant: str
    workload: str
    study: int
    trial: int | None  # The tuning trial (external ruleset), None under self-tuning.
    seed: int


@dataclass(frozen=True)
class Cluster:
    """How the array script runs each task (the sbatch header and the runner's command)."""

    mode: str = "venv"  # venv: PYTHON in CODE_DIR; docker: IMAGE with the paths mounted
    python: str = "python3"  # the interpreter with AlgoPerf installed (venv mode)
    image: str = ""  # AlgoPerf's JAX image (docker mode)
    gpus_per_node: int = 8  # AlgoPerf's reference: 8xV100 per run
    cpus_per_task: int = 0  # 0: SLURM's default
    time_limit: str = ""  # sbatch --time, e.g. 2-00:00:00; "": the partition's
    partition: str = ""
    data_dir: str = "/data"  # AlgoPerf's layout: DATA_DIR/<dataset>[/jax for imagenet]
    runner_options: tuple[str, ...] = ("--mock_examples", "0", "--fix_jax_restore")
    check_restore: bool = False  # dump the restored state of each resume (for CI's check)


def ablation_names() -> tuple[str, ...]:
    """The reset strategies a user may name as an ablation: the keys of the product's
    registry (`STRATEGIES` in reset/strategies.py), read from its source, not imported, so
    that `plan` runs on a login node's plain Python (no jax)."""
    tree = ast.parse(STRATEGY_REGISTRY.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if getattr(target, "id", None) == "STRATEGIES" and isinstance(node.value, ast.Dict):
            return tuple(key.value for key in node.value.keys)
    raise PlanError(f"{STRATEGY_REGISTRY}: no STRATEGIES dict (the registry moved?)")


def contestant(spec: str) -> Contestant:
    """A contestant from its command-line spec: `ours`, `nadamw_baseline` (AlgoPerf's
    self-tuning NAdamW baseline), an ablation of ours named by its reset strategy (`none`,
    `full`, ...), or a submission file's path (a `.py` file; relative to the checkout)."""
    if spec in REGISTRY:
        return Contestant(spec, _relative(REGISTRY[spec].path))
    if spec.endswith(".py"):
        path = Path(spec) if Path(spec).is_absolute() else ROOT / spec
        if not path.is_file():
            raise PlanError(
                f"--contestants: {spec!r} is not a file; allowed: {', '.join(REGISTRY)}, an "
                "ablation (a reset strategy's name) or an existing submission file (*.py)"
            )
        name = re.sub(r"[^A-Za-z0-9_]+", "_", path.stem)
        try:
            return Contestant(name, _relative(path))
        except ValueError:
            return Contestant(name, f"submissions/{name}.py", (("__file__", str(path)),))
    names = ablation_names()
    if spec not in names:
        raise PlanError(
            f"--contestants: unknown {spec!r}; allowed: {', '.join(REGISTRY)}, an ablation "
            f"({', '.join(names)}) or a submission file (*.py)"
        )
    return Contestant(spec, f"submissions/{spec}.py", (("reset_strategy", spec),))


def _relative(path: Path) -> str:
    """A path inside the checkout as the runner wants it: relative, no leading `./`."""
    return str(path.resolve().relative_to(ROOT))


def derive_seed(seed: int, workload: str, study: int, trial: int | None) -> int:
    """The run's rng seed, a signed 32-bit integer as make_job_config.py draws, from a
    SHA-256 of the inputs: independent of the process (unlike Python's `hash`)."""
    text = f"{seed}/{workload}/{study}/{-1 if trial is None else trial}"
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return MIN_INT + number % (MAX_INT - MIN_INT)


def check_inputs(workloads: Sequence[str], studies: int, trials: int, ruleset: str) -> None:
    """PlanError naming the bad field and the allowed values."""
    unknown = [w for w in workloads if w not in DATASETS]
    if not workloads or unknown:
        raise PlanError(f"--workloads: unknown {unknown}; allowed: {', '.join(DATASETS)}")
    if ruleset not in RULESETS:
        raise PlanError(f"--ruleset: {ruleset!r}; allowed: {', '.join(RULESETS)}")
    if studies < 1:
        raise PlanError(f"--studies: {studies}; allowed: an integer >= 1")
    if trials < 1:
        raise PlanError(f"--trials: {trials}; allowed: an integer >= 1")


def make_jobs(
    contestants: Sequence[Contestant],
    workloads: Sequence[str],
    studies: int,
    trials: int,
    ruleset: str,
    seed: int,
) -> list[Job]:
    """The array tasks in make_job_config.py's order (workload, study, trial) for each
    contestant in turn; a contestant's runs share their seeds with the others'."""
    check_inputs(workloads, studies, trials, ruleset)
    per_trial = range(trials) if ruleset == "external" else [None]
    jobs = []
    for c in contestants:
        for w in workloads:
            for s in range(studies):
                for t in per_trial:
                    jobs.append(Job(len(jobs), c.name, w, s, t, derive_seed(seed, w, s, t)))
    return jobs


def job_entry(
    job: Job,
    contestant: Contestant,
    experiment_dir: str,
    ruleset: str,
    trials: int,
    search_space: str,
    max_global_steps: int | None,
) -> dict:
    """The job's entry of AlgoPerf's job config, keys in make_job_config.py's order."""
    entry = {
        "framework": "jax",
        "workload": job.workload,
        "dataset": DATASETS[job.workload],
        "submission_path": contestant.submission_path,
        "experiment_dir": f"{experiment_dir}/{contestant.name}/study_{job.study}",
        "rng_seed": job.seed,
        "tuning_ruleset": ruleset,
        "num_tuning_trials": trials if ruleset == "external" else 1,
    }
    if ruleset == "external":
        entry["hparam_start_index"] = job.trial
        entry["hparam_end_index"] = job.trial + 1
        entry["tuning_search_space"] = search_space
    if max_global_steps is not None:
        entry["max_global_steps"] = max_global_steps
    return entry


def job_config(
    jobs, contestants, experiment_dir, ruleset, trials, search_space, max_global_steps
) -> dict:
    """AlgoPerf's job config: {"<task index>": entry}."""
    by_name = {c.name: c for c in contestants}
    return {
        str(j.index): job_entry(
            j,
            by_name[j.contestant],
            experiment_dir,
            ruleset,
            trials,
            search_space,
            max_global_steps,
        )
        for j in jobs
    }


def render_sbatch(template: str, values: Mapping[str, str]) -> str:
    """The template with each `@NAME@` replaced; PlanError if one is left unfilled."""
    text = template
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if left:
        raise PlanError(f"sbatch template: no value for {left}")
    return text


def sbatch_values(cluster: Cluster, study_dir: Path, n_jobs: int, name: str) -> dict[str, str]:
    """The template's values for a study of `n_jobs` tasks in `study_dir`."""
    header = []
    if cluster.gpus_per_node:
        header.append(f"#SBATCH --gpus-per-node={cluster.gpus_per_node}")
    if cluster.cpus_per_task:
        header.append(f"#SBATCH --cpus-per-task={cluster.cpus_per_task}")
    if cluster.time_limit:
        header.append(f"#SBATCH --time={cluster.time_limit}")
    if cluster.partition:
        header.append(f"#SBATCH --partition={cluster.partition}")
    return {
        "JOB_NAME": name,
        "ARRAY": f"0-{n_jobs - 1}",
        "LOG_DIR": str(study_dir / "logs"),
        "EXTRA_SBATCH": "\n".join(header) or "# (no GPUs, CPUs, time or partition requested)",
        "STUDY_DIR": shlex.quote(str(study_dir)),
        "CODE_DIR": shlex.quote(str(ROOT)),
        "MODE": cluster.mode,
        "PYTHON": shlex.quote(cluster.python),
        "IMAGE": shlex.quote(cluster.image),
        "DATA_DIR": shlex.quote(cluster.data_dir),
        "RUNNER_OPTIONS": " ".join(shlex.quote(o) for o in cluster.runner_options),
        "CHECK_RESTORE": "1" if cluster.check_restore else "0",
    }


def ablation_source(c: Contestant) -> str:
    """The wrapper submission of an ablation (or of a file outside the checkout)."""
    template = ABLATION_TEMPLATE.read_text(encoding="utf-8")
    overrides = dict(c.overrides)
    path = overrides.pop("__file__", "")
    return template.replace("@OVERRIDES@", repr(overrides)).replace("@SOURCE@", repr(path))


@dataclass(frozen=True)
class Study:
    """What `plan` decided; written to `study.json`, read by submit, status and score."""

    name: str
    study_dir: str
    experiment_dir: str
    ruleset: str
    workloads: tuple[str, ...]
    studies: int
    trials: int
    contestants: tuple[Contestant, ...]
    jobs: tuple[Job, ...]
    cluster: Cluster

    def to_json(self) -> str:
        """The plan as JSON (the dataclasses as objects)."""
        return json.dumps(asdict(self), indent=1)


def read_study(study_dir: Path) -> Study:
    """`study.json` of a planned study folder, as the typed records."""
    path = Path(study_dir) / "study.json"
    if not path.exists():
        raise PlanError(f"{path}: not found; run `python -m scripts.study plan` first")
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["workloads"] = tuple(raw["workloads"])
    raw["contestants"] = tuple(
        Contestant(c["name"], c["submission_path"], tuple(map(tuple, c["overrides"])))
        for c in raw["contestants"]
    )
    raw["jobs"] = tuple(Job(**j) for j in raw["jobs"])
    raw["cluster"] = Cluster(
        **{**raw["cluster"], "runner_options": tuple(raw["cluster"]["runner_options"])}
    )
    return Study(**raw)


def write_study(
    study_dir: Path,
    contestant_specs: Sequence[str],
    workloads: Sequence[str],
    studies: int,
    trials: int = 1,
    ruleset: str = "self",
    seed: int = 0,
    max_global_steps: int | None = None,
    search_space: str = "tuning_search_space.json",
    experiment_dir: Path | None = None,
    cluster: Cluster = Cluster(),
) -> Study:
    """Writes the study folder: config.json (AlgoPerf's format), study.sbatch, submissions/
    (the wrappers), logs/, study.json; returns the plan."""
    if cluster.mode not in MODES:
        raise PlanError(f"--mode: {cluster.mode!r}; allowed: {', '.join(MODES)}")
    if cluster.mode == "docker" and not cluster.image:
        raise PlanError("--image: required with --mode docker (AlgoPerf's JAX image)")
    contestants = tuple(contestant(s) for s in dict.fromkeys(contestant_specs))
    study_dir = Path(study_dir).resolve()
    experiments = (Path(experiment_dir) if experiment_dir else study_dir / "experiments").resolve()
    jobs = make_jobs(contestants, workloads, studies, trials, ruleset, seed)
    config = job_config(
        jobs, contestants, str(experiments), ruleset, trials, search_space, max_global_steps
    )
    for sub in ("logs", "state", "submissions"):
        (study_dir / sub).mkdir(parents=True, exist_ok=True)
    for c in contestants:
        if c.overrides:
            (study_dir / c.submission_path).write_text(ablation_source(c), encoding="utf-8")
    (study_dir / "config.json").write_text(json.dumps(config, indent=4), encoding="utf-8")
    values = sbatch_values(cluster, study_dir, len(jobs), study_dir.name)
    sbatch = render_sbatch(SBATCH_TEMPLATE.read_text(encoding="utf-8"), values)
    (study_dir / "study.sbatch").write_text(sbatch, encoding="utf-8")
    plan = Study(
        study_dir.name,
        str(study_dir),
        str(experiments),
        ruleset,
        tuple(workloads),
        studies,
        trials,
        contestants,
        tuple(jobs),
        cluster,
    )
    (study_dir / "study.json").write_text(plan.to_json(), encoding="utf-8")
    return plan
