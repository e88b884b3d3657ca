"""Writes the submission into the layout of AlgoPerf's submissions repository.

    python -m scripts.package_submission --authors "A. Author, B. Author" \\
        --affiliations "Some University" [--out DIR] [--name NAME]

writes DIR/submissions/self_tuning/NAME/ (DIR: a clone of the submissions repository
`mlcommons/submissions_algorithms`, or any folder to copy from) with submission.py, its
packages (schedules/, reset/, early_switching/: their .py files only), its modules
(`MODULES`: hyperparameters.py, controller.py, steps.py, ...), an __init__.py,
submission_info.yml and, when
the project has one, tuning_search_space.json. The runner imports it as
`submissions.self_tuning.NAME.submission` from that repository's root, and submission.py
then imports its packages relatively.

No requirements.txt: AlgoPerf's rules ask for one only for dependencies beyond the
benchmark's own, and the packaged code imports nothing else (`check_package` verifies
it, with the metadata and the layout, on the folder it wrote).

Standard library only.
"""

import argparse
import ast
import json
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "cyclic_soft_reset"
SUBMISSION_NAME = "AlgoPerf's NAdamW cycle, then soft resets and early switching"
RULESET_FOLDER = "submissions/self_tuning"
RULESET = "self-tuning"
MODULES = (
    "submission.py",
    "hyperparameters.py",
    "hyperparameter_spec.py",
    "controller.py",
    "records.py",
    "steps.py",
    "compile_ahead.py",
    "algoperf_compat.py",
)
PACKAGES = ("schedules", "reset", "early_switching")
OPTIONAL_FILES = ("tuning_search_space.json",)
INIT = '"""AlgoPerf submission: a NAdamW cycle, then soft resets and early switching."""\n'
# The submissions repository's required fields of submission_info.yml.
REQUIRED_FIELDS = ("submission_name", "submission_folder", "authors", "ruleset")
# Top-level modules AlgoPerf itself installs (its pinned dependencies, ALGOPERF.md): the
# packaged code may import these, the standard library and its own modules, nothing else.
ALGOPERF_PROVIDES = frozenset(
    {"algoperf", "jax", "jaxlib", "flax", "optax", "chex", "numpy", "absl", "tensorflow"}
)


def _submission_info(name: str, project: dict, authors: str, affiliations: str) -> str:
    """submission_info.yml: every value a double-quoted (JSON, hence YAML) string."""
    fields = {
        "submission_name": SUBMISSION_NAME,
        # The template: the name of the folder within submissions/self_tuning/.
        "submission_folder": name,
        "authors": authors,
        "affiliations": affiliations,
        "version": project["version"],
        "ruleset": RULESET,
        "framework": "JAX",
        "description": project["description"],
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items())


def read_submission_info(path: Path) -> dict[str, str]:
    """The ``key: "value"`` lines of a submission_info.yml written by this script."""
    info = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            info[key.strip()] = json.loads(value.strip()) if value.strip() else ""
    return info


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of the absolute imports in every .py file under ``folder``."""
    names = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def check_package(repo: Path, name: str) -> list[str]:
    """What is wrong with ``repo/submissions/self_tuning/name`` as a submission (empty
    when nothing): the layout, submission_info.yml's required fields, no
    requirements.txt, and imports only from the standard library, AlgoPerf's own
    dependencies (``ALGOPERF_PROVIDES``) and the folder itself."""
    folder = Path(repo) / RULESET_FOLDER / name
    problems = [
        f"{folder / required} is missing"
        for required in ("submission.py", "__init__.py", "submission_info.yml")
        if not (folder / required).is_file()
    ]
    if (folder / "requirements.txt").exists():
        problems.append(f"{folder / 'requirements.txt'}: nothing beyond AlgoPerf is needed")
    if (folder / "submission_info.yml").is_file():
        info = read_submission_info(folder / "submission_info.yml")
        problems += [
            f"submission_info.yml: {field} is missing or empty"
            for field in REQUIRED_FIELDS
            if not str(info.get(field, "")).strip()
        ]
        if info.get("submission_folder") not in (None, "", name):
            problems.append(
                f"submission_info.yml: submission_folder is {info['submission_folder']!r}, "
                f"the folder is {RULESET_FOLDER}/{name}: give its name, {name!r}"
            )
        if info.get("ruleset") not in (None, "", RULESET):
            problems.append(f"submission_info.yml: ruleset is {info['ruleset']!r}, not {RULESET!r}")
    own = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    foreign = imported_modules(folder) - set(sys.stdlib_module_names) - ALGOPERF_PROVIDES - own
    if foreign:
        problems.append(
            f"imports {', '.join(sorted(foreign))}, which AlgoPerf does not install "
            "(a requirements.txt would be needed)"
        )
    return problems


def package(
    out: Path,
    name: str = DEFAULT_NAME,
    *,
    authors: str,
    affiliations: str,
    root: Path = ROOT,
) -> Path:
    """Writes out/submissions/self_tuning/name/ (replacing an earlier package there),
    checks it (``check_package``) and returns its path. ValueError, naming the flag, for
    empty authors or affiliations, a name that is not a module name, or a failed check."""
    for flag, value in (("--authors", authors), ("--affiliations", affiliations)):
        if not value.strip():
            raise ValueError(
                f"{flag} is required (submission_info.yml names the authors and their "
                'affiliations), e.g. --authors "A. Author, B. Author" --affiliations "Univ."'
            )
    if not (name.isidentifier() and name == name.lower()):
        raise ValueError(
            f"--name must be a lowercase Python identifier (a-z, digits, _), got {name!r}: "
            "the runner imports the folder as a module path, and the submissions "
            "repository asks for a lowercase folder name without spaces."
        )
    target = Path(out) / RULESET_FOLDER / name
    if target.exists():
        if not (target / "submission_info.yml").is_file():
            raise FileExistsError(f"{target} exists and is not a package written by this script.")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for module in MODULES:
        shutil.copy2(root / module, target / module)
    for package_name in PACKAGES:
        for source in sorted((root / package_name).rglob("*.py")):
            if "__pycache__" in source.parts:
                continue
            destination = target / source.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    for optional in OPTIONAL_FILES:
        if (root / optional).is_file():
            shutil.copy2(root / optional, target / optional)
    (target / "__init__.py").write_text(INIT)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    (target / "submission_info.yml").write_text(
        _submission_info(name, project, authors, affiliations)
    )
    problems = check_package(out, name)
    if problems:
        raise ValueError(
            f"{target} fails the submissions repository's checks: " + "; ".join(problems)
        )
    return target


def pull_request_body(info_path: Path) -> str:
    """The YAML block the submissions repository's pull-request template asks for (its
    check reads the first ```yaml block of a PR titled "[submission] ...")."""
    return "```yaml\n" + info_path.read_text(encoding="utf-8") + "```"


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.package_submission",
        description=(
            f"Write the submission as DIR/{RULESET_FOLDER}/NAME/, the layout of AlgoPerf's "
            "submissions repository, and check it."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("dist"),
        help="DIR, e.g. a clone of the submissions repository (default: dist)",
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"NAME, a Python identifier (default: {DEFAULT_NAME})"
    )
    parser.add_argument("--authors", default="", help="for submission_info.yml (required)")
    parser.add_argument("--affiliations", default="", help="for submission_info.yml (required)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = package(args.out, args.name, authors=args.authors, affiliations=args.affiliations)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print(target)
    print(
        "\nOpen the pull request against the `evaluation` branch of "
        'mlcommons/submissions_algorithms, titled "[submission] '
        f'{SUBMISSION_NAME}", with this block in its description:\n',
        file=sys.stderr,
    )
    print(pull_request_body(target / "submission_info.yml"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
