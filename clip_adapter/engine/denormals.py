"""Keep subnormal floats out of CPU training, where each operation on one costs ~100x a normal one.

Why: with weight decay, the weights of a dead adapter unit (and their momentum) shrink geometrically
and, tens of thousands of steps in, enter the subnormal range (below 1.2e-38 in fp32): a 200-epoch
CLIP-Adapter run at ImageNet size slowed by half after epoch 70 that way. Two measures, both CPU only
(GPUs handle subnormals at full speed):

* ``flushed_denormals``: the CPU's flush-to-zero / denormals-are-zero mode around each training step,
  restored afterwards (so the frozen encoder, which exact mode runs between steps, computes features
  bit for bit as a cache fill does). It covers the calling thread only; elementwise operations on
  large tensors also run on torch's worker threads, which keep their own mode.
* ``zero_subnormals``: the state that carries over between steps (weights, optimiser buffers) has its
  subnormal entries set to zero every ``SWEEP_STEPS`` steps (at the end of the epoch that reaches
  them, and after the last epoch), whichever thread produced them. A value needs thousands of steps
  of decay to get there, so this bounds the slow steps while costing nothing in a few-shot run of
  one step per epoch.

Values below 1.2e-38 carry no information a classifier can use, so either measure changes no
result that matters; both runs of a cached/exact or resume comparison apply them identically.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


SWEEP_STEPS = 64


def subnormal_sweep_due(epoch: int, steps_per_epoch: int, max_epoch: int) -> bool:
    """Whether the epoch ending now crosses a multiple of ``SWEEP_STEPS`` steps (or is the last one):
    a function of the epoch alone, so an interrupted and resumed run sweeps where an uninterrupted one does."""
    return epoch + 1 == max_epoch or (epoch + 1) * steps_per_epoch // SWEEP_STEPS > epoch * steps_per_epoch // SWEEP_STEPS


def flush_denormal_enabled() -> bool:
    """Whether the calling thread flushes subnormals (torch has a setter but no getter)."""
    return (torch.tensor([2e-39], dtype=torch.float32) * 0.5).item() == 0.0


@contextmanager
def flushed_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush-to-zero on this thread inside the block (when ``enabled`` and the CPU supports it)."""
    if not enabled:
        yield
        return
    before = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def zero_subnormals(tensors: Iterable[torch.Tensor]) -> int:
    """Set the subnormal entries of floating-point CPU tensors to zero, in place; returns how many there were."""
    count = 0
    for t in tensors:
        if not t.is_floating_point() or t.device.type != "cpu":
            continue
        with torch.no_grad():
            mask = (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)
            n = int(mask.sum())
            if n:
                t.masked_fill_(mask, 0)
                count += n
    return count
