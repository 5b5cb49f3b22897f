"""Names on the command line -> files and classes: datasets, trainers, their config files, the data root.

A dataset is ``configs/datasets/<name>.yaml`` and a trainer's config ``configs/trainers/<TRAINER>/<CFG>.yaml``
in the folders of ``clip_adapter.plugins.config_dirs()`` (this repository's ``configs/`` first, then
each plugin's), or a path to a YAML file. Unknown names fail with one line and a "did you mean",
like the registries' errors, before any run starts.
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import yaml

from clip_adapter.errors import UserError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as the experiments use it: its folder-level name, config file and registered name."""

    name: str  # the name given (caltech101), or the YAML file's stem: the run folders' level
    config: str  # the dataset config file
    registered: str  # DATASET.NAME in it (Caltech101): the class that reads it


@dataclass(frozen=True)
class ConfigRef:
    """A trainer config: the name in folder names (rn50, or the YAML file's stem), the file, and how it was given."""

    name: str
    path: str
    given: str


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    lowered = {k.lower(): k for k in known}
    hint = close[0] if close else lowered.get(name.lower())
    return f"; did you mean {hint!r}?" if hint else ""


def _config_dirs() -> List[str]:
    from clip_adapter.plugins import config_dirs

    return config_dirs()


def _is_path(text: str) -> bool:
    return text.endswith(YAML_SUFFIXES) or os.sep in text


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _yaml_files(folder: str) -> Dict[str, str]:
    if not os.path.isdir(folder):
        return {}
    return {_stem(f): os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(YAML_SUFFIXES)}


def _named(sub: str) -> Dict[str, str]:
    """name -> file of every YAML in ``<config dir>/<sub>``; the first folder that has a name wins."""
    found: Dict[str, str] = {}
    for root in _config_dirs():
        for name, path in _yaml_files(os.path.join(root, sub)).items():
            found.setdefault(name, path)
    return found


def _existing_yaml(text: str, what: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise UserError(f"{what} {text} not found: give an existing YAML file, or a name from the configs folders")
    return path


def dataset(text: str) -> DatasetRef:
    """A dataset name (``configs/datasets/<name>.yaml`` in the config folders) or a dataset YAML path."""
    if _is_path(text):
        path = _existing_yaml(text, "dataset config file")
        name = _stem(path)
    else:
        known = _named("datasets")
        if text not in known:
            where = ", ".join(os.path.join(d, "datasets") for d in _config_dirs())
            raise UserError(f"unknown dataset {text!r}{_did_you_mean(text, known)} (no {text}.yaml in {where}; "
                            f"or give a YAML path) known: {' '.join(sorted(known)) or 'none'}")
        path, name = known[text], text
    return DatasetRef(name, path, registered_dataset(path))


def registered_dataset(path: str) -> str:
    """DATASET.NAME of a dataset config file, checked against the registry (with a did-you-mean)."""
    from clip_adapter.plugins import load_all
    from clip_adapter.registry import DATASETS

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the dataset config {path}: {exc}") from None
    name = (data.get("DATASET") or {}).get("NAME") if isinstance(data, dict) else None
    if not name:
        raise UserError(f"{path} sets no DATASET.NAME: a dataset config names its registered dataset class there")
    load_all(quiet=True)
    try:
        DATASETS.get(str(name))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return str(name)


def trainer(name: str) -> type:
    """The registered trainer class (built-ins and plugins), or the registry's one-line error."""
    from clip_adapter.plugins import load_all
    from clip_adapter.registry import TRAINERS

    load_all(quiet=True)
    return TRAINERS.get(name)


def trainer_configs(trainer_name: str) -> Dict[str, str]:
    """CFG name -> file for a trainer, from every config folder."""
    return _named(os.path.join("trainers", trainer_name))


def trainer_config(trainer_name: str, text: str) -> ConfigRef:
    """A trainer's config by name (``configs/trainers/<TRAINER>/<CFG>.yaml``) or a YAML path."""
    if _is_path(text):
        path = _existing_yaml(text, "config file")
        return ConfigRef(_stem(path), path, text)
    known = trainer_configs(trainer_name)
    if text in known:
        return ConfigRef(text, known[text], text)
    where = ", ".join(os.path.join(d, "trainers", trainer_name) for d in _config_dirs())
    if not known:
        raise UserError(f"no configs for trainer {trainer_name!r} in {where}: give CFG as the path of a YAML file, "
                        "or add <CFG>.yaml there (a plugin ships its own configs folder)")
    raise UserError(f"no config {text!r} for trainer {trainer_name!r}{_did_you_mean(text, known)} (looked in {where}); "
                    f"known CFG names: {' '.join(sorted(known))}")


def config_exists(trainer_name: str, name: str) -> bool:
    return name in trainer_configs(trainer_name)


def backbone_config_name(backbone: str) -> str:
    """rn50 | RN50 | ViT-B/16 | vit_b16 -> the config name (rn50, vit_b16, ...); a YAML path stays as it is."""
    if _is_path(backbone) and backbone.endswith(YAML_SUFFIXES):
        return backbone
    return backbone.lower().replace("vit-b/", "vit_b").replace("-", "_").replace("/", "_")


def generated(ds: DatasetRef) -> bool:
    """Whether the dataset writes its own images on first use (the offline smoke data), so DATA may
    default to ./data. The same rule as results.json's ``offline_check``."""
    return ds.registered.startswith("Smoke")


def data_root(datasets: Sequence[DatasetRef], env: Optional[str]) -> str:
    """DATA, checked: required unless every dataset is generated (then ./data, created when missing)."""
    offline = bool(datasets) and all(generated(d) for d in datasets)
    names = " ".join(sorted({d.name for d in datasets}))
    if not env:
        if not offline:
            raise UserError("DATA is not set: export DATA=/path/to/datasets (the folder holding the datasets in CoOp's layout, "
                            "e.g. $DATA/caltech-101), then rerun")
        env = os.path.join(os.getcwd(), "data")
        print(f"DATA is not set: using {env} for the generated dataset(s) {names}", file=sys.stderr)
    if not os.path.isdir(env):
        if not offline:
            raise UserError(f"DATA={env} does not exist: point DATA at the folder holding the datasets (see the README's data section)")
        os.makedirs(env, exist_ok=True)
    return env
