"""The report as LaTeX tabulars, ready to paste into a paper's float.

Text is escaped (dataset and config names have underscores), ``±``, ``Δ`` and the row marks are
typeset in math mode, and the footnotes of the marks are rows under the table so they stay with
it; titles and source citations are ``%`` comments. ``latex_booktabs`` uses booktabs rules
(``\\usepackage{booktabs}``), ``latex`` plain ``\\hline``.
"""
from __future__ import annotations

from clip_adapter.app.results.labels import EXPECTED_SEEDS
from clip_adapter.app.results.layout import grid
from clip_adapter.app.results.model import Table

ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
           "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "†": r"$^\dagger$", "‡": r"$^\ddagger$"}


def escape(text: str) -> str:
    return "".join(SYMBOLS.get(ch) or ESCAPES.get(ch) or ch for ch in text)


def _comment(text: str) -> str:
    return "".join(f"% {line}\n" for line in text.splitlines())


def render_latex_table(t: Table, fmt: str = "latex", expected: int = EXPECTED_SEEDS) -> str:
    g = grid(t, expected)
    if not g.body:
        return _comment("\n".join(g.notes))
    top, mid, bottom = (r"\toprule", r"\midrule", r"\bottomrule") if fmt == "latex_booktabs" else (r"\hline", r"\hline", r"\hline")
    spec = "l" * g.lead_columns + "r" * (len(g.headers) - g.lead_columns)
    lines = [_comment(g.title).rstrip("\n"), f"\\begin{{tabular}}{{{spec}}}", top,
             " & ".join(escape(h) for h in g.headers) + r" \\", mid]
    lines += [" & ".join(escape(c) for c in row) + r" \\" for row in g.body]
    lines.append(bottom)
    lines += [f"\\multicolumn{{{len(g.headers)}}}{{l}}{{\\footnotesize {escape(n)}}} \\\\" for n in g.footnotes]
    lines.append(r"\end{tabular}")
    text = "\n".join(lines) + "\n"
    if g.notes:
        text += _comment("\n".join(g.notes))
    return text
