"""Words and marks shared by the renderers: row labels, the marks that flag a row, cell strings."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional

from clip_adapter.app.results.model import Cell, Stat
from clip_adapter.app.results.runs import Method

EXPECTED_SEEDS = 3
# Marks after a row's label, each explained once under the table that shows it.
TEST_MARK, SPLIT_MARK = "†", "‡"
FOOTNOTES = {
    TEST_MARK: "hyperparameters chosen on the test split: only to reproduce a published figure",
    SPLIT_MARK: "not on CoOp's split: split_file.origin is not 'coop' (e.g. built by the project from the annotations), "
                "so not comparable with figures on CoOp's splits",
}
PUBLISHED_TEST_NOTE = "hyperparameters chosen on the test split by the published source (optimistic)"
PROTOCOL_NAMES = {"fewshot_val": "few-shot val", "full_val": "full val", "none": "none", "test": "test", "": ""}
OFFLINE = "offline check"
PUBLISHED_ONLY = "published only"  # a reference row: a published figure of a method not run here


def label_of(m: Method, show_backbone: bool = False) -> str:
    inner = ", ".join(x for x in (m.config, m.variant) if x)
    text = f"{m.name} ({inner})" if inner else m.name
    return f"{text} [{m.backbone}]" if show_backbone else text


def labeller(methods: Iterable[Method]) -> Callable[[Method], str]:
    """Labels that show the backbone only where one trainer/config/variant was run with several backbones."""
    seen: Dict[tuple, set] = defaultdict(set)
    for m in methods:
        seen[(m.trainer, m.config, m.variant)].add(m.backbone)
    return lambda m: label_of(m, show_backbone=len(seen[(m.trainer, m.config, m.variant)]) > 1)


def marks(m: Method) -> List[str]:
    """The footnote marks of a method's row: † test-selected, ‡ not on CoOp's split."""
    out = []
    if m.protocol == "test":
        out.append(TEST_MARK)
    if m.split:
        out.append(SPLIT_MARK)
    return out


def differ(methods: Iterable[Method], attr: str) -> bool:
    """Whether the methods differ in ``attr`` (then the table shows it as a column)."""
    return len({getattr(m, attr) for m in methods}) > 1


def fmt_stat(stat: Optional[Stat], expected: int = EXPECTED_SEEDS) -> str:
    if stat is None:
        return "missing"
    note = f" (n={stat.n})" if stat.n != expected else ""
    if stat.n == 1:
        return f"{stat.mean:.2f}{note}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}{note}"


def fmt_num(x: Optional[float], missing: str = "missing", signed: bool = False) -> str:
    if x is None:
        return missing
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def fmt_cell(cell: Optional[Cell], expected: int = EXPECTED_SEEDS) -> str:
    if cell is None:
        return ""
    if cell.text is not None:
        return cell.text
    if cell.stat is not None:
        return fmt_stat(cell.stat, expected)
    return fmt_num(cell.value, cell.missing, cell.signed)


def shots_name(shots: Optional[int]) -> str:
    return "zero-shot" if shots is None else f"{shots} shot" + ("s" if shots != 1 else "")
