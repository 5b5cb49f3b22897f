"""INPUT.* against the backbone's preprocessing: empty keys take the backbone's values, disagreements fail.

Size and pixel statistics are properties of the weights: a ViT-B/16 at 224 px fed 32-px images, or
SigLIP (mean = std = 0.5) fed CLIP-normalised pixels, runs without error and produces meaningless
features. So an INPUT.SIZE, PIXEL_MEAN or PIXEL_STD that disagrees with the weights is an error that
names both values; an empty one means "the backbone's". CoOp's YAML files state CLIP's values
explicitly, which agree with every OpenAI (and LAION) model, so they keep loading. INTERPOLATION is a
choice the weights tolerate: a different value is logged and used. INPUT.PRESET still chooses the
resize rule (the weights' own evaluation rule is logged when it differs).

``unset``: a config of defaults whose values count as "not chosen" (``train.py --engine dassl``
builds on Dassl's defaults, 224 px, bilinear, ImageNet statistics, which a config that does not
mention them should not impose on a CLIP backbone).
"""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple

from clip_adapter.backbones.base import BackboneSpec, Preprocess
from clip_adapter.data.transforms import InputSpec, check_interpolation, config_size, preset
from clip_adapter.errors import ConfigError

log = logging.getLogger(__name__)

# the resize rule of the weights' own evaluation -> the INPUT.PRESET that applies it
_PRESET_OF_MODE = {"shortest": "clip", "squash": "coop"}


def _same(a, b, tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


def _unset(cfg, unset, key: str) -> bool:
    if unset is None:
        return False
    return list(cfg.INPUT[key]) == list(unset.INPUT[key]) if isinstance(cfg.INPUT[key], (list, tuple)) else cfg.INPUT[key] == unset.INPUT[key]


def resolve_input(cfg, pre: Preprocess, who: str, unset=None) -> Tuple[InputSpec, List[str]]:
    """(the input spec in effect, the INPUT keys taken from the backbone); ConfigError on a disagreement.

    ``who`` names the backbone in messages.
    """
    taken: List[str] = []
    want = tuple(int(s) for s in pre.size)
    size = config_size(cfg.INPUT.SIZE)
    if size is None or _unset(cfg, unset, "SIZE"):
        size = want
        taken.append("SIZE")
    elif tuple(size) != want:
        raise ConfigError(
            f"INPUT.SIZE {tuple(size)} disagrees with the input resolution {want} of {who}; "
            f"set INPUT.SIZE \"{want}\" or leave it empty (= the backbone's)"
        )
    stats = []
    for key, theirs in (("PIXEL_MEAN", pre.mean), ("PIXEL_STD", pre.std)):
        ours = [float(x) for x in cfg.INPUT[key]]
        if not ours or _unset(cfg, unset, key):
            ours = [float(x) for x in theirs]
            taken.append(key)
        elif not _same(ours, theirs):
            raise ConfigError(
                f"INPUT.{key} {ours} disagrees with {list(theirs)}, the statistics {who} was trained with; "
                f"set INPUT.{key} \"{list(theirs)}\" or leave it empty (= the backbone's)"
            )
        stats.append(tuple(ours))
    interp = cfg.INPUT.INTERPOLATION
    if not interp or _unset(cfg, unset, "INTERPOLATION"):
        interp = pre.interpolation
        taken.append("INTERPOLATION")
    elif check_interpolation(interp) != pre.interpolation:
        log.warning("INPUT.INTERPOLATION %s differs from %s, which %s was trained with; using %s as configured",
                    interp, pre.interpolation, who, interp)
    own = _PRESET_OF_MODE.get(pre.resize_mode)
    if own and own != preset(cfg):
        log.info("Note: %s's own evaluation resizes %s (INPUT.PRESET %s); this run uses INPUT.PRESET %s",
                 who, "both sides" if pre.resize_mode == "squash" else "the short side and centre-crops", own, preset(cfg))
    return InputSpec(size, check_interpolation(interp), stats[0], stats[1]), taken


def write_input(cfg, spec: InputSpec) -> None:
    """Put the values in effect into a (defrosted) config, so config.yaml and Dassl's transforms see them."""
    cfg.INPUT.SIZE = tuple(spec.size)
    cfg.INPUT.INTERPOLATION = spec.interpolation
    cfg.INPUT.PIXEL_MEAN = list(spec.mean)
    cfg.INPUT.PIXEL_STD = list(spec.std)


def preflight_input(cfg, unset=None) -> Optional[InputSpec]:
    """Before a run writes anything: check and fill INPUT.* from the backbone's preprocessing when it is
    known without loading the weights (names, tags, the offline models). Returns the spec, or None when
    only loading the weights can tell (the trainer then checks when it loads them). ``cfg`` must be defrosted."""
    from clip_adapter.backbones import family_of

    spec = BackboneSpec.from_cfg(cfg)
    pre = family_of(spec).expected_preprocess(spec)
    if pre is None:
        return None
    resolved, taken = resolve_input(cfg, pre, f"{spec.family} {spec.name}{' ' + spec.weights if spec.weights else ''}", unset)
    write_input(cfg, resolved)
    if taken:
        log.debug("INPUT.%s from the backbone's preprocessing", ", INPUT.".join(taken))
    return resolved
