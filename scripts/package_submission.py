"""Writes the submission as a folder of AlgoPerf's submissions repository.

    python -m scripts.package_submission --out DIR [--name NAME]

writes DIR/NAME/ with submission.py, its packages (schedules/, reset/, early_switching/:
their .py files only), algoperf_compat.py, an __init__.py, submission_info.yml,
requirements.txt (the runtime dependencies of pyproject.toml) and, when the project has
one, tuning_search_space.json. Copy DIR/NAME/ to `submissions/self_tuning/NAME/` of the
submissions repository: the runner imports it as `submissions.self_tuning.NAME.submission`
from that repository's root, and submission.py then imports its packages relatively.

Standard library only.
"""

import argparse
import json
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "cyclic_adamw_soft_reset"
SUBMISSION_NAME = "Cyclic AdamW with soft resets and early switching"
RULESET_FOLDER = "submissions/self_tuning"
MODULES = ("submission.py", "hyperparameters.py", "algoperf_compat.py")
PACKAGES = ("schedules", "reset", "early_switching")
OPTIONAL_FILES = ("tuning_search_space.json",)
INIT = '"""AlgoPerf submission: cyclic AdamW with soft resets and early switching."""\n'


def _submission_info(name: str, project: dict, authors: str, affiliations: str) -> str:
    """submission_info.yml: every value a double-quoted (JSON, hence YAML) string."""
    fields = {
        "submission_name": SUBMISSION_NAME,
        "submission_folder": f"{RULESET_FOLDER}/{name}",
        "authors": authors,
        "affiliations": affiliations,
        "version": project["version"],
        "ruleset": "self-tuning",
        "framework": "JAX",
        "description": project["description"],
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items())


def package(
    out: Path,
    name: str = DEFAULT_NAME,
    *,
    authors: str = "",
    affiliations: str = "",
    root: Path = ROOT,
) -> Path:
    """Writes out/name/ (replacing an earlier package there) and returns its path."""
    if not name.isidentifier():
        raise ValueError(
            f"--name must be a Python identifier (letters, digits, _), got {name!r}: the "
            "runner imports the folder as a module path."
        )
    target = Path(out) / name
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
    (target / "requirements.txt").write_text("".join(f"{d}\n" for d in project["dependencies"]))
    (target / "submission_info.yml").write_text(
        _submission_info(name, project, authors, affiliations)
    )
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.package_submission",
        description=(
            "Write the submission as DIR/NAME/, ready to be copied to "
            f"{RULESET_FOLDER}/NAME/ of AlgoPerf's submissions repository."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("dist"), help="DIR (default: dist)")
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"NAME, a Python identifier (default: {DEFAULT_NAME})"
    )
    parser.add_argument("--authors", default="", help="for submission_info.yml")
    parser.add_argument("--affiliations", default="", help="for submission_info.yml")
    args = parser.parse_args(argv)
    try:
        target = package(args.out, args.name, authors=args.authors, affiliations=args.affiliations)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
