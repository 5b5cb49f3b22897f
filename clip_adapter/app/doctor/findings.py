"""What the doctor reports: one :class:`Finding` per problem (with its fix and what ``--fix`` may
delete), gathered per dataset in a :class:`Report` whose status is the worst finding's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

SHOW = 3  # example paths per problem
STATUS_ORDER = ("ok", "warning", "broken", "incomplete", "missing")
USABLE = ("ok", "warning")


@dataclass
class Finding:
    """One problem: ``level`` error (the dataset cannot be used as is), warning or note; and the fix."""

    level: str
    text: str
    fix: str = ""
    delete: Tuple[str, ...] = ()  # what --fix removes (files or folders that are rebuilt automatically)


@dataclass
class Report:
    dataset: str
    folder: str = ""
    status: str = "ok"
    counts: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # split -> (found, listed)
    checked_images: int = 0
    unreadable: int = 0
    classes: str = ""
    fewshot: str = ""
    val_is_test: bool = False  # ImageNet: its val split is its test split (as in CoOp)
    findings: List[Finding] = field(default_factory=list)

    def add(self, level: str, text: str, fix: str = "", status: str = "", delete: Sequence[str] = ()) -> None:
        self.findings.append(Finding(level, text, fix, tuple(delete)))
        new = status or {"error": "broken", "warning": "warning"}.get(level, "ok")
        if STATUS_ORDER.index(new) > STATUS_ORDER.index(self.status):
            self.status = new

    @property
    def usable(self) -> bool:
        return self.status in USABLE


def _examples(paths: Sequence[str]) -> str:
    return ", ".join(paths[:SHOW]) + (f" (+{len(paths) - SHOW} more)" if len(paths) > SHOW else "")

