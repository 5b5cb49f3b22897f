"""Planned runs and the pieces every experiment builds them from: the settings (output root, data,
seeds), a method (trainer + config + extra opts, checked once), the folder layout and the one place
that writes a run's ``train.py`` arguments.

Folder layout (CoOp's and CoCoOp's, kept exactly):

- few-shot:       ``<OUTPUT>/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<S>``
- training-free:  ``<OUTPUT>/<DATASET>/<TRAINER>/<CFG>[/<variant>]/seed<S>``
- base-to-novel:  ``<OUTPUT>/base2new/{train_base,test_new,test_base}/<DATASET>/shots_<K>/<TRAINER>/<CFG>[/<variant>]/seed<S>``
- transfer:       ``<OUTPUT>/evaluation[_from_<SOURCE>]/<TRAINER>/<CFG>_<K>shots[/<variant>]/<TARGET>/seed<S>``
- ablation:       ``<OUTPUT>/ablation/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots/<variant>/seed<S>``

where ``<variant>`` names the extra ``KEY VALUE`` opts (``naming.variant_suffix``; keys that do not
change the numbers never make one).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from clip_adapter.app.experiments import lookup
from clip_adapter.app.experiments.naming import variant_suffix
from clip_adapter.app.experiments.lookup import ConfigRef, DatasetRef
from clip_adapter.errors import UserError

TRAIN_MODULE = "clip_adapter.app.train"  # what a run executes: python -m clip_adapter.app.train ARGS


@dataclass
class Settings:
    """What the environment says (the scripts' variables): where runs go, where data is, the seeds."""

    output: str = "output"
    data: Optional[str] = None  # DATA as given; resolved by ``data_for``
    seeds: Tuple[int, ...] = (1, 2, 3)
    python: str = sys.executable
    dry_run: bool = False
    _data: Optional[str] = field(default=None, repr=False)

    def data_for(self, datasets: Sequence[DatasetRef]) -> str:
        """The data root for these datasets (checked once; see ``lookup.data_root``)."""
        if self._data is None:
            self._data = lookup.data_root(datasets, self.data)
        return self._data


@dataclass(frozen=True)
class Dependency:
    """A run folder another run needs finished (its model), and how a person produces it."""

    output_dir: str
    what: str  # "the base-class training run"
    hint: str  # the command that makes it


@dataclass(frozen=True)
class Run:
    """One planned run: its folder, its ``train.py`` arguments and the runs it needs."""

    output_dir: str
    argv: Tuple[str, ...]
    needs: Tuple[Dependency, ...] = ()

    def command(self, python: str) -> List[str]:
        return [python, "-m", TRAIN_MODULE, *self.argv]

    def job_line(self, python: str) -> Dict[str, object]:
        """The run as a line of a sweep job list (``clip-adapter sweep FILE``)."""
        return {"output_dir": self.output_dir, "cmd": self.command(python), "after": [d.output_dir for d in self.needs]}


@dataclass(frozen=True)
class Method:
    """A trainer with a config and extra opts, resolved and checked: what the registry says about it."""

    trainer: str
    cls: type
    config: ConfigRef
    opts: Tuple[str, ...]
    variant: str  # the folder level the opts make ("" = none)

    @property
    def training_free(self) -> bool:
        return not self.cls.uses_training_data

    def level(self, shots: Optional[int] = None) -> str:
        """``<CFG>_<SHOTS>shots[/<variant>]`` (or ``<CFG>[/<variant>]`` without shots)."""
        base = self.config.name if shots is None else f"{self.config.name}_{shots}shots"
        return f"{base}/{self.variant}" if self.variant else base

    def hint_args(self) -> str:
        """``TRAINER CFG [KEY VALUE ...]`` as a person types them after DATASET SEED."""
        return " ".join([self.trainer, self.config.given, *self.opts])


_CHECKED: Dict[tuple, object] = {}


def method(trainer_name: str, cfg: str, opts: Sequence[str] = ()) -> Method:
    """Resolve a trainer and its config; the opts must be KEY VALUE pairs the scripts do not set."""
    cls = lookup.trainer(trainer_name)
    ref = lookup.trainer_config(trainer_name, cfg)
    opts = tuple(str(o) for o in opts)
    return Method(trainer_name, cls, ref, opts, variant_suffix(opts, forbid_script_keys=True))


def config_of(m: Method, ds: DatasetRef, extra: Sequence[str] = ()):
    """The frozen config a run of ``m`` on ``ds`` starts from (files, trainer, opts); a bad key or value
    fails here, in one line, before any run. Cached: experiments ask for the same one often."""
    from clip_adapter.config import setup_cfg

    key = (m.trainer, m.config.path, ds.config, m.opts, tuple(extra))
    if key not in _CHECKED:
        _CHECKED[key] = setup_cfg(ds.config, m.config.path, {"TRAINER.NAME": m.trainer}, [*extra, *m.opts])
    return _CHECKED[key]


def transfer_blocker(m: Method, ds: DatasetRef) -> Optional[str]:
    """Why ``m``'s learned weights cannot classify classes they were not trained on (None: they can)."""
    return m.cls.transfer_blocker(config_of(m, ds))


def folder_opts(cls: type) -> List[str]:
    """``KEY VALUE`` for the trainer's ``folder_keys``, at its defaults (CoOp: N_CTX 16, CSC False, ...)."""
    from clip_adapter.config import get_cfg_default

    cfg = get_cfg_default()
    out: List[str] = []
    for key in cls.folder_keys:
        node = cfg
        for part in key.split("."):
            node = node[part]
        out += [key, str(node)]
    return out


def scheduled_config(trainer_name: str, cls: type, cfg: str, ds: DatasetRef, shots: int) -> str:
    """The trainer's config for this many shots on this dataset (``schedule_configs``), the first that exists."""
    if lookup._is_path(cfg):
        return cfg
    for name in cls.schedule_configs(cfg, ds.registered, shots):
        if lookup.config_exists(trainer_name, name):
            return name
    return cfg


def train_run(s: Settings, output_dir: str, ds: DatasetRef, m: Method, seed: int, flags: Sequence[str] = (),
              opts: Sequence[str] = (), needs: Sequence[Dependency] = ()) -> Run:
    """The one place that writes a run's train.py arguments (script-set opts first, then the method's)."""
    argv = ["--root", s.data_for([ds]), "--seed", str(seed), "--trainer", m.trainer, "--dataset-config-file", ds.config,
            "--config-file", m.config.path, "--output-dir", output_dir, *flags, *opts, *m.opts]
    return Run(output_dir, tuple(argv), tuple(needs))


# ----------------------------------------------------------------------- folders
def fewshot_dir(s: Settings, ds: DatasetRef, m: Method, shots: int, seed: int) -> str:
    return os.path.join(s.output, ds.name, m.trainer, m.level(shots), f"seed{seed}")


def zeroshot_dir(s: Settings, ds: DatasetRef, m: Method, seed: int) -> str:
    return os.path.join(s.output, ds.name, m.trainer, m.level(), f"seed{seed}")


def base2new_dir(s: Settings, step: str, ds: DatasetRef, m: Method, shots: int, seed: int) -> str:
    return os.path.join(s.output, "base2new", step, ds.name, f"shots_{shots}", m.trainer, m.level(), f"seed{seed}")


def evaluation_dir(s: Settings, source: DatasetRef, target: DatasetRef, m: Method, shots: int, seed: int) -> str:
    # CoCoOp's layout with an ImageNet source; another source gets its own root, so two never mix.
    root = "evaluation" if source.name == "imagenet" else f"evaluation_from_{source.name}"
    return os.path.join(s.output, root, m.trainer, m.level(shots), target.name, f"seed{seed}")


def ablation_dir(s: Settings, ds: DatasetRef, m: Method, shots: int, variant: str, seed: int) -> str:
    return os.path.join(s.output, "ablation", ds.name, m.trainer, f"{m.config.name}_{shots}shots", variant, f"seed{seed}")


def unique(runs: Sequence[Run]) -> List[Run]:
    """Each run once (experiments share folders: a transfer's source run is the few-shot run); two
    different runs in one folder are refused."""
    seen: Dict[str, Run] = {}
    out: List[Run] = []
    for r in runs:
        key = os.path.normpath(r.output_dir)
        if key in seen:
            if seen[key].argv != r.argv:
                raise UserError(f"two different runs would share the folder {r.output_dir}; give them different extra opts")
            continue
        seen[key] = r
        out.append(r)
    return out

