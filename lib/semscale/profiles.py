"""A notebook's parameters under a profile, read without Jupyter: the training side needs them too.

``notebooks/profiles/<profile>.yaml`` maps each notebook's stem to the parameters it overrides; the notebook's
parameters cell (the cell tagged ``parameters``, papermill's convention) holds the defaults, one literal assignment
per name. :func:`parameters` merges the two the way papermill does when it runs the notebook, so
``python -m semscale.sweep --profile P --notebook NN`` builds from the very values the notebook sees. Only the
standard library and PyYAML are imported here (no papermill or nbformat), so the training path runs on a bare host.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from .records import REPO

NOTEBOOKS = REPO / "notebooks"
PROFILES = ("smoke", "default", "gpu", "paper")


def notebook_paths(notebooks_dir: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in notebooks_dir.glob("[0-9]*.ipynb"))


def select(paths: list[Path], only: str | None) -> list[Path]:
    """The notebooks named by ``only`` (a stem, its number or a file name), or all of them."""
    if only is None:
        return paths
    chosen = [p for p in paths if p.stem == only or p.stem.startswith(only) or p.name == only]
    if not chosen:
        raise SystemExit(f"{only!r} matches no notebook; choose from: {', '.join(p.stem for p in paths)}")
    return chosen


def read_profile(profile: str, notebooks_dir: Path = NOTEBOOKS) -> dict[str, dict]:
    """The profile's parameters per notebook stem, as written (SystemExit naming the file, line and column of a YAML
    error, or an unknown profile)."""
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    path = notebooks_dir / "profiles" / f"{profile}.yaml"
    try:
        profile_params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SystemExit(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(profile_params, dict) or not all(isinstance(v, (dict, type(None))) for v in profile_params.values()):
        raise SystemExit(f"{path}: a profile maps each notebook's stem to a mapping of its parameters")
    return {stem: dict(params or {}) for stem, params in profile_params.items()}


def default_parameters(path: Path) -> dict:
    """The values of a notebook's parameters cell: each ``name = literal`` assignment (SystemExit on anything else)."""
    cells = json.loads(Path(path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise SystemExit(f"{path}: expected one cell tagged 'parameters', found {len(tagged)}")
    values = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise SystemExit(f"{path}: the parameters cell holds only `name = value` lines; line {node.lineno} is not one")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise SystemExit(f"{path}: parameter {node.targets[0].id!r} (line {node.lineno}) is no literal") from None
    return values


def parameters(notebook: str, profile: str, overrides: dict | None = None, notebooks_dir: Path = NOTEBOOKS) -> dict:
    """What ``notebook`` (stem or number) sees when run under ``profile``: its defaults, the profile's values, then
    ``overrides``; ``profile`` is set as the runner sets it. SystemExit on a name the notebook does not have."""
    (path,) = select(notebook_paths(notebooks_dir), notebook)[:1]
    values = default_parameters(path)
    given = {**read_profile(profile, notebooks_dir).get(path.stem, {}), **(overrides or {})}
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise SystemExit(f"{path.stem} has no parameter(s) {unknown}; its parameters are {sorted(values)}")
    return {**values, **given, "profile": profile}
