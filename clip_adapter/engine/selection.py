"""The one hyperparameter-selection protocol of the project, and its one search utility.

Why: every method compared here chooses something (CLIP-Adapter's alpha, the linear probe's C,
Tip-Adapter's alpha/beta, GDA's alpha, the deployed epoch), and the reference repositories choose
it on different data, several on the test set (Tip-Adapter-F keeps the best-on-test epoch; the
ImageNet searches of Tip-Adapter and GDA run on test, ImageNet having no val split). A comparison is
only fair when every method chooses on the same, declared split. ``SELECTION.PROTOCOL`` declares it:

``fewshot_val`` (default)
    CoOp's few-shot validation set: ``min(shots, 4)`` images per class drawn from the val split
    with the training shots (``clip_adapter/data/fewshot.py``); the dataset's ``val``.
``full_val``
    the dataset's whole val split (what Tip-Adapter's and GDA's code search on); ``val_full``.
``none``
    no search: every knob takes its configured value (CLAP's validation-free setting); a
    ``TEST.FINAL_MODEL best_val`` epoch choice is not made either (the last epoch is deployed).
``test``
    choose on the test split. Allowed only to reproduce a published figure that was chosen so;
    logged loudly, and recorded in results.json (``selection.protocol``) for the tables to mark.

Where the chosen split does not exist (ImageNet: ``dataset.val_is_test``; an empty val split) a
search refuses with one line instead of falling back to another split.

``search`` runs one knob's candidates in order, records every (value, score), and chooses the best
score; ties go to the first candidate in the given order (``ties="first"``, as a strict ``>``
update does) or to the last (``ties="last"``, as a ``>=`` update does). An optional refinement (e.g.
CoOp's log-space bisection of the linear probe's C, ``log_bisection``) then proposes further values
from the scores so far and names the chosen one itself. A trainer calls these through
``TrainerBase.select``, which keeps the records that ``selection_record()`` puts into results.json.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from clip_adapter.errors import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("fewshot_val", "full_val", "none", "test")
DEFAULT_PROTOCOL = "fewshot_val"
#: protocol -> the dataset attribute / ``split_features`` name it scores on (None: no search)
SPLIT_OF = {"fewshot_val": "val", "full_val": "val_full", "test": "test", "none": None}
TIES = ("first", "last")

Score = Callable[[Any], float]


def protocol_of(cfg) -> str:
    """The configured protocol, checked (one-line error naming the key and the choices)."""
    value = str(cfg.SELECTION.PROTOCOL)
    if value not in PROTOCOLS:
        raise ConfigError(f"SELECTION.PROTOCOL must be one of {', '.join(PROTOCOLS)}, got {value!r}")
    return value


def selection_split(cfg, dataset, what: str, fix: str) -> Optional[str]:
    """The split ``what`` is chosen on under the configured protocol, or None for ``none``.

    Refuses (ConfigError, one line) a validation protocol on a dataset whose val split is its test
    set or is empty, and a ``full_val`` on a dataset object that keeps no whole val split. ``fix``
    says how to set the knob without a search.
    """
    protocol = protocol_of(cfg)
    split = SPLIT_OF[protocol]
    name = type(dataset).__name__
    if split in ("val", "val_full"):
        if getattr(dataset, "val_is_test", False):
            alternatives = "" if "SELECTION.PROTOCOL" in fix else \
                ", or set SELECTION.PROTOCOL none (or test, only to reproduce a published figure)"
            raise ConfigError(f"{name}'s validation split is its test set, so {what} cannot be chosen on it "
                              f"(SELECTION.PROTOCOL {protocol}); {fix}{alternatives}")
        items = getattr(dataset, split, None)
        if items is None:
            raise ConfigError(f"SELECTION.PROTOCOL {protocol} needs the whole val split, which {name} does not keep; "
                              "use SELECTION.PROTOCOL fewshot_val")
        if len(items) == 0:
            raise ConfigError(f"{name} has no validation images to choose {what} on (SELECTION.PROTOCOL {protocol}); {fix}")
    return split


def warn_test_selection(what: str) -> None:
    """The loud line of the ``test`` protocol (once per search)."""
    log.warning("!!! SELECTION.PROTOCOL test: %s is chosen ON THE TEST SET. The number is optimistic and is "
                "comparable only to figures chosen the same way (published-figure reproduction); results.json "
                "records it (selection.protocol = test) !!!", what)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent, computed as the evaluator does (correct * 100 / total)."""
    total = int(labels.shape[0])
    correct = int((logits.argmax(dim=1).cpu() == labels.cpu()).sum())
    return 100.0 * correct / max(total, 1)


# ------------------------------------------------------------------------------ searches
@dataclass
class Search:
    """One knob's search: every value tried with its score, in order, and the value chosen."""

    knob: str
    split: Optional[str] = None
    tried: List[Tuple[Any, float]] = field(default_factory=list)
    chosen: Any = None

    def record(self) -> Dict:
        """The results.json entry: ``{"knob", "tried": [{"value", "score"}], "chosen"}``."""
        return {
            "knob": self.knob,
            "tried": [{"value": _jsonable(v), "score": float(s)} for v, s in self.tried],
            "chosen": _jsonable(self.chosen),
        }

    def best(self, ties: str = "first") -> Any:
        """The value with the highest score; ties to the first or the last tried."""
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if not self.tried:
            raise ValueError(f"no value of {self.knob} was scored")
        top = max(s for _, s in self.tried)
        hits = [v for v, s in self.tried if s == top]
        return hits[0] if ties == "first" else hits[-1]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (list, str)):
        return value.item()  # numpy scalars
    return value


Refinement = Callable[[Search, Score], Any]


def search(
    knob: str,
    candidates: Iterable[Any],
    score: Score,
    *,
    split: Optional[str] = None,
    ties: str = "first",
    refine: Optional[Refinement] = None,
    verbose: bool = True,
) -> Search:
    """Score every candidate in order and choose: the best (``ties`` decides among equals), or, with
    ``refine``, the value the refinement names after proposing and scoring more values itself."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    result = Search(knob, split)
    for value in candidates:
        s = float(score(value))
        result.tried.append((value, s))
        if verbose:
            log.debug("%s search on %s: %s -> %.2f%%", knob, split, _short(value), s)
    if not result.tried:
        raise ConfigError(f"the search over {knob} has no candidate values; list at least one")
    result.chosen = result.best(ties)
    if refine is not None:
        result.chosen = refine(result, score)
    if verbose:
        log.info("%s: chose %s on %s (%.2f%%; %d value(s) tried)", knob, _short(result.chosen), split,
                 dict((_key(v), s) for v, s in result.tried)[_key(result.chosen)], len(result.tried))
    return result


def _key(value: Any) -> Any:
    return repr(_jsonable(value))


def _short(value: Any) -> str:
    value = _jsonable(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return str(value)


def log_bisection(steps: int) -> Refinement:
    """CoOp's refinement of the linear probe's C (its ``lpclip`` script): around the best grid value c,
    score c/10 and 10c, keep the better end (the left one on a tie) and move the other end to the
    log-space midpoint; ``steps`` times. The chosen value is the end kept by the last step (not
    necessarily the best score overall: CoOp's procedure, reproduced)."""

    def refine(result: Search, score: Score) -> Any:
        best = float(result.chosen)
        left, right = best / 10.0, best * 10.0
        for step in range(int(steps)):
            acc_left, acc_right = float(score(left)), float(score(right))
            result.tried += [(left, acc_left), (right, acc_right)]
            lo, hi = math.log10(left), math.log10(right)
            if acc_left < acc_right:
                best, left = right, 10 ** ((lo + hi) / 2)
            else:
                best, right = left, 10 ** ((lo + hi) / 2)
        return best

    return refine


def linear_grid(low: float, high: float, steps: int) -> List[float]:
    """Tip-Adapter's search grid (its utils.py ``search_hp``): ``steps`` values from ``low`` up to,
    but excluding, ``high``: ``low + i * (high - low) / steps`` for i in 0..steps-1."""
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"a grid needs at least one step, got {steps}")
    return [i * (high - low) / steps + low for i in range(steps)]


def as_candidates(values: Sequence[Any], where: str) -> List[Any]:
    """A configured candidate list, duplicates dropped (first kept), refused when empty."""
    out: List[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError(f"{where} lists no candidate values")
    return out
