"""Loading every trainer, dataset (and backbone) there is: the built-in ones and plugins.

A plugin is any installed distribution that declares an entry point in the group
``clip_adapter.plugins``; the entry point names a module that registers its classes when imported
(``@TRAINERS.register()``, ``@DATASETS.register()``; a backbone family with
``BACKBONES.register(MyBackbone, name="myfamily")``, see clip_adapter/backbones/base.py), exactly as
the built-in ``trainers/``, ``datasets/`` and ``clip_adapter/backbones/`` modules do. A plugin may also ship config files: a module attribute
``CLIP_ADAPTER_CONFIGS`` naming a folder laid out like this repository's ``configs/``
(``trainers/<TRAINER>/<cfg>.yaml``, ``datasets/<name>.yaml``) makes them available to the scripts
and the experiment planner by name. In ``setup.py``/``pyproject.toml``::

    entry_points={"clip_adapter.plugins": ["my_methods = my_package.clip_plugin"]}

A plugin that fails to import is reported in one line (its name, the error, the fix) and the others
load; nothing else stops. ``load_all()`` is what the app layer and the Dassl plugin call.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import List, Optional

log = logging.getLogger(__name__)

GROUP = "clip_adapter.plugins"
CONFIGS_ATTRIBUTE = "CLIP_ADAPTER_CONFIGS"
# The repository's own configs/ (present in a checkout or an editable install; a wheel has none).
REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@dataclass
class PluginReport:
    """What ``load_all`` found: loaded plugin names, failures (one line each), config folders."""

    loaded: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    config_dirs: List[str] = field(default_factory=list)


_REPORT: Optional[PluginReport] = None


def load_all(quiet: bool = False) -> PluginReport:
    """Import the built-in trainers and datasets, then every plugin (once per process)."""
    global _REPORT
    if _REPORT is not None:
        return _REPORT
    import clip_adapter.datasets  # noqa: F401  (registers the built-in datasets)
    import clip_adapter.trainers  # noqa: F401  (registers the built-in trainers)

    report = PluginReport()
    if os.path.isdir(REPO_CONFIGS):
        report.config_dirs.append(REPO_CONFIGS)
    for ep in _entry_points():
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not stop the others
            line = (f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}; "
                    f"fix or uninstall the package that declares it (entry-point group {GROUP})")
            report.failed.append(line)
            if quiet:  # (the caller reports report.failed itself, or not at all)
                log.info(line)
            else:  # one line, not also a log record (an unconfigured logging would print it twice)
                print(f"warning: {line}", file=sys.stderr)
            continue
        report.loaded.append(ep.name)
        folder = getattr(module, CONFIGS_ATTRIBUTE, None)
        if folder:
            folder = os.path.abspath(os.fspath(folder))
            if os.path.isdir(folder):
                report.config_dirs.append(folder)
            else:
                log.warning("plugin %r declares %s = %s, which is not a folder", ep.name, CONFIGS_ATTRIBUTE, folder)
    _REPORT = report
    return report


def config_dirs() -> List[str]:
    """The folders searched for ``trainers/<T>/<cfg>.yaml`` and ``datasets/<name>.yaml``, in order."""
    return list(load_all(quiet=True).config_dirs)


def _entry_points():
    try:
        return sorted(metadata.entry_points(group=GROUP), key=lambda ep: ep.name)
    except Exception as exc:  # a broken distribution's metadata
        log.warning("cannot list the %s entry points: %s", GROUP, exc)
        return []


def reset() -> None:
    """Forget what was loaded (tests that install a plugin during the session)."""
    global _REPORT
    _REPORT = None
    importlib.invalidate_caches()
