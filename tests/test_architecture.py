"""The import graph follows the layers of docs/contributing.md, and the config has no dead keys.

Imports run one way: app -> dassl plugin, engine -> features, backbones, models -> data -> config,
registry. ``trainers/`` sit on the engine, ``datasets/`` on the data layer; nothing in the library
imports the app layer or the optional Dassl plugin. Every import statement counts, including the
ones inside functions (a deferred import is still a dependency).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]

# layer -> the layers it may import (itself included where listed)
BASE = {"base"}
ALLOWED: Dict[str, Set[str]] = {
    "base": BASE,
    "data": BASE | {"data"},
    "models": BASE | {"data", "models", "backbones", "features"},
    "backbones": BASE | {"data", "backbones"},
    "features": BASE | {"data", "features", "backbones"},
    "engine": BASE | {"data", "models", "backbones", "features", "engine"},
    "trainers": BASE | {"data", "models", "backbones", "features", "engine", "trainers"},
    "datasets": BASE | {"data", "datasets"},
    "plugins": BASE | {"trainers", "datasets"},
    "dassl": BASE | {"data", "models", "backbones", "features", "engine", "plugins", "dassl", "datasets"},
    "app": BASE | {"data", "models", "backbones", "features", "engine", "plugins", "dassl", "trainers", "datasets", "app"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "clip_adapter":
        return "external"
    if len(parts) == 1 or parts[1] in ("config", "registry", "errors", "utils", "progress", "published"):
        return "base"
    name = parts[1]
    if name == "__main__":  # ``python -m clip_adapter``: the one command
        return "app"
    if name in ("app", "dassl", "engine", "features", "backbones", "models", "data", "trainers", "datasets", "plugins"):
        return name
    raise AssertionError(f"module {module} belongs to no layer: add it to tests/test_architecture.py's map")


def project_modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted((REPO / "clip_adapter").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path
    for folder in ("trainers", "datasets"):
        for path in sorted((REPO / folder).glob("*.py")):
            stem = path.stem
            yield (f"clip_adapter.{folder}" if stem == "__init__" else f"clip_adapter.{folder}.{stem}"), path


def imports_of(module: str, path: Path) -> List[Tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # ``from clip_adapter import cli`` names a module, not an attribute
            if target == "clip_adapter":
                out += [(node.lineno, f"clip_adapter.{alias.name}") for alias in node.names]
    return out


def test_every_import_follows_the_layers():
    bad = []
    for module, path in project_modules():
        src = layer_of(module)
        for lineno, target in imports_of(module, path):
            dst = layer_of(target)
            if dst == "external":
                continue
            if dst not in ALLOWED[src]:
                bad.append(f"{path.relative_to(REPO)}:{lineno}: {src} module {module} imports {target} ({dst})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_map_catches_a_wrong_import(tmp_path):
    """The check itself can fail: a data-layer file importing the engine is flagged."""
    fake = tmp_path / "bad.py"
    fake.write_text("from clip_adapter.engine.run import execute\n")
    src = layer_of("clip_adapter.data.bad")
    flagged = [t for _, t in imports_of("clip_adapter.data.bad", fake) if layer_of(t) not in ALLOWED[src] and layer_of(t) != "external"]
    assert flagged == ["clip_adapter.engine.run"]


def test_no_module_reaches_the_private_parts_of_the_cli_or_the_dassl_plugin_from_the_library():
    """Belt and braces for the two rules the issue names: the library never imports the app layer or
    the optional Dassl plugin (the layer map above forbids both; this spells them out)."""
    for module, path in project_modules():
        src = layer_of(module)
        if src in ("app", "dassl"):
            continue
        for lineno, target in imports_of(module, path):
            assert not target.startswith(("clip_adapter.app", "clip_adapter.dassl", "clip_adapter.cli")), f"{path}:{lineno} imports {target}"


# ------------------------------------------------------------------ config hygiene
def _leaf_keys(node, prefix=""):
    from yacs.config import CfgNode as CN

    for key, value in node.items():
        if isinstance(value, CN):
            if getattr(value, "__dict__", {}).get(CN.NEW_ALLOWED) and not value:
                yield prefix + key  # an open table (RATIO_TABLE): read as a whole
            else:
                yield from _leaf_keys(value, prefix + key + ".")
        else:
            yield prefix + key


def _library_source() -> str:
    texts = []
    for _module, path in project_modules():
        if path.name == "config.py" and path.parent.name == "clip_adapter":
            continue
        texts.append(path.read_text(encoding="utf-8"))
    return "\n".join(texts)


def test_every_default_key_is_read_or_declared_a_compatibility_key():
    """No key is accepted and silently ignored: each default is read somewhere (``.KEY`` attribute
    access in the library), or is listed in COMPAT_KEYS, which a run logs when set to a non-default value."""
    from clip_adapter.config import COMPAT_KEYS, get_cfg_default

    source = _library_source()
    cfg = get_cfg_default()
    keys = list(_leaf_keys(cfg))
    unread = [k for k in keys if k not in COMPAT_KEYS and not re.search(r"\." + re.escape(k.split(".")[-1]) + r"\b", source)]
    assert not unread, f"default keys nothing reads (read them, remove them, or list them in COMPAT_KEYS): {unread}"
    stale = [k for k in COMPAT_KEYS if k not in keys]
    assert not stale, f"COMPAT_KEYS names keys that are not defaults: {stale}"


@pytest.mark.slow
def test_a_compatibility_key_set_in_a_run_is_logged_once(run_train, tmp_path):
    out = tmp_path / "run"
    assert run_train(out, "ZeroshotCLIP", "TEST.COMPUTE_CMAT", "True", "INPUT.CUTOUT_N", "3") == 0
    log = (out / "log.txt").read_text()
    notes = [line for line in log.splitlines() if "compatibility key that has no effect here" in line]
    assert len(notes) == 2 and any("TEST.COMPUTE_CMAT" in n for n in notes) and any("INPUT.CUTOUT_N" in n for n in notes)


def test_trainer_nodes_come_from_the_trainers_and_conflicts_are_refused():
    from yacs.config import CfgNode as CN

    from clip_adapter.config import add_config_node, get_cfg_default, registered_config_nodes
    from clip_adapter.errors import ConfigError

    owners = registered_config_nodes()
    assert "TRAINER.CLIP_ADAPTER" in owners and "CLIP_Adapter" in owners["TRAINER.CLIP_ADAPTER"]
    assert "TRAINER.COOP" in owners and get_cfg_default().TRAINER.COOP.N_CTX == 16
    other = CN()
    other.N_CTX = 4
    with pytest.raises(ConfigError, match="TRAINER.COOP"):
        add_config_node("TRAINER.COOP", other, owner="a plugin")
    with pytest.raises(ConfigError, match="core key"):
        add_config_node("OPTIM", CN(), owner="a plugin")


def test_the_feature_cache_location_is_written_into_the_run_config(run_train, tmp_path):
    import yaml

    out = tmp_path / "run"
    assert run_train(out, "ZeroshotCLIP") == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["FEATURES"]["CACHE_DIR"] and Path(saved["FEATURES"]["CACHE_DIR"]).is_absolute() or saved["FEATURES"]["CACHE_DIR"].startswith(".")
