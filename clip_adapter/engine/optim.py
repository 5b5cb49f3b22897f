"""Optimisers and Dassl-compatible learning-rate schedules (per-epoch, with warm-up)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from clip_adapter.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "single_step", "multi_step")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg) -> torch.optim.Optimizer:
    name = optim_cfg.NAME.lower()
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to optimise: the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim_cfg.LR,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=optim_cfg.WEIGHT_DECAY,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY, betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY, betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    raise ConfigError(f"OPTIM.NAME must be one of {', '.join(OPTIMIZERS)}, got {optim_cfg.NAME!r}")


class LazyOptimizer:
    """``build_optimizer(params, optim_cfg)``, constructed when first used (any attribute: ``step``,
    ``param_groups``, ``state_dict``...), then standing in for it.

    Why: constructing a torch optimiser imports ``torch._dynamo`` (torch.optim wraps its methods in
    ``torch._disable_dynamo``), about a second of start-up that a run which only evaluates never
    needs. OPTIM.NAME and the parameters are checked here, so a bad config still fails before any work.
    """

    _OWN = ("_params", "_cfg", "_optimizer", "_setups")

    def __init__(self, params: Iterable[torch.nn.Parameter], optim_cfg) -> None:
        self._params = [p for p in params if p.requires_grad]
        if not self._params:
            raise ValueError("nothing to optimise: the model has no trainable parameters")
        if optim_cfg.NAME.lower() not in OPTIMIZERS:
            raise ConfigError(f"OPTIM.NAME must be one of {', '.join(OPTIMIZERS)}, got {optim_cfg.NAME!r}")
        self._cfg = optim_cfg
        self._optimizer = None
        self._setups: list = []

    @property
    def built(self) -> bool:
        return self._optimizer is not None

    def when_built(self, setup: Callable[[torch.optim.Optimizer], None]) -> "LazyOptimizer":
        """Run ``setup(optimizer)`` on the torch optimiser as soon as it exists (now, if it does)."""
        if self._optimizer is not None:
            setup(self._optimizer)
        else:
            self._setups.append(setup)
        return self

    def build(self) -> torch.optim.Optimizer:
        """The torch optimiser itself, constructed (and set up) on the first call."""
        if self._optimizer is None:
            optimizer = build_optimizer(self._params, self._cfg)
            for setup in self._setups:
                setup(optimizer)
            self._optimizer = optimizer
        return self._optimizer

    def __getattr__(self, name: str):
        if name in LazyOptimizer._OWN:  # not set yet (a copy being made): never build for these
            raise AttributeError(name)
        return getattr(self.build(), name)


def set_up_optimizer(optimizer, setup: Callable[[torch.optim.Optimizer], None]):
    """Apply ``setup`` to an optimiser, lazy (when it is built) or not (now); returns ``optimizer``."""
    if isinstance(optimizer, LazyOptimizer):
        return optimizer.when_built(setup)
    setup(optimizer)
    return optimizer


def lr_at_epoch(epoch: int, optim_cfg) -> float:
    """The learning rate of (0-based) ``epoch``, matching Dassl's warm-up wrappers.

    During warm-up: WARMUP_CONS_LR (constant) or a linear ramp from WARMUP_MIN_LR. Afterwards the
    main schedule restarts its count at 0 (Dassl's WARMUP_RECOUNT=True) and runs over MAX_EPOCH.
    """
    base = float(optim_cfg.LR)
    warm = int(optim_cfg.WARMUP_EPOCH)
    if optim_cfg.LR_SCHEDULER not in SCHEDULERS:
        raise ConfigError(f"OPTIM.LR_SCHEDULER must be one of {', '.join(SCHEDULERS)}, got {optim_cfg.LR_SCHEDULER!r}")
    if warm > 0 and epoch < warm:
        if optim_cfg.WARMUP_TYPE == "constant":
            return float(optim_cfg.WARMUP_CONS_LR)
        if optim_cfg.WARMUP_TYPE == "linear":
            return float(optim_cfg.WARMUP_MIN_LR) if epoch == 0 else base * epoch / warm
        raise ConfigError(f"OPTIM.WARMUP_TYPE must be constant or linear, got {optim_cfg.WARMUP_TYPE!r}")
    step = epoch - warm if (warm > 0 and optim_cfg.WARMUP_RECOUNT) else epoch
    if optim_cfg.LR_SCHEDULER == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * step / max(1, int(optim_cfg.MAX_EPOCH))))
    if optim_cfg.LR_SCHEDULER == "single_step":
        size = optim_cfg.STEPSIZE[0] if isinstance(optim_cfg.STEPSIZE, (list, tuple)) else optim_cfg.STEPSIZE
        return base if size <= 0 else base * optim_cfg.GAMMA ** (step // size)
    milestones = list(optim_cfg.STEPSIZE)
    return base * optim_cfg.GAMMA ** sum(1 for m in milestones if step >= m)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
