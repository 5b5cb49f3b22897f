"""The documentation stays true: README.md and docs/*.md against the repository and the tools.

Fast: every relative link resolves to a file of the repository (and an ``#anchor`` to one of its
headings, with GitHub's slugs); no link leaves the repository except http(s) links to public
sites; no file names the development machine's sibling folder or the old README fragments.

Slow: the example outputs marked ``<!-- demo-output: NAME -->`` (the code block that follows the
comment) are replayed: the demo's runs (the commands ``DRY_RUN=1 scripts/demo.sh`` lists, run
in-process through ``train.py``'s ``main``), then the own-data example, the doctor on that data
(healthy, then broken on purpose) and a refused transfer, all in a temporary folder laid out like
the repository root. Each block must match what the tools print now, with accuracies, timings and
hashes normalised away (everything else, including row labels, counts and messages, is compared).
A block may show an excerpt: lines ``...`` separate parts that must appear in order, the first at
the start and the last at the end. ``CLIP_ADAPTER_UPDATE_DOCS=1`` rewrites the blocks from the
replay instead (then read the diff). The code example of docs/contributing.md is installed as a
plugin package and trained.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
UPDATE = os.environ.get("CLIP_ADAPTER_UPDATE_DOCS") == "1"
# What the replay's temporary folders are shown as (the folder a user clones into, and its CLIP weights).
SHOWN_ROOT = "/home/you/clip-adapter"
SHOWN_WEIGHTS = "/home/you/.cache/clip"

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`\n]*`")
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
MARKER = re.compile(r"^<!--\s*(demo-output|example):\s*([\w-]+)\s*-->\s*$")
PRIVATE_HOST = re.compile(r"^(localhost|127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|0\.0\.0\.0|\[::1\])|\.local$|\.internal$")


# ------------------------------------------------------------------------------------ parsing
def prose_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of everything outside fenced code blocks."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation but - and _ dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    seen: Dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> List[Tuple[int, str]]:
    found = []
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        bare = INLINE_CODE.sub("", line)
        found += [(no, m.group(1)) for m in MD_LINK.finditer(bare)]
        found += [(no, m.group(1)) for m in HTML_LINK.finditer(bare)]
        m = REF_DEF.match(bare)
        if m:
            found.append((no, m.group(1)))
    return found


def link_problem(page: Path, target: str) -> Optional[str]:
    """Why ``target`` (a link in ``page``) is not acceptable, or None."""
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", target)
    if scheme:
        if scheme.group(1).lower() not in ("http", "https"):
            return f"{scheme.group(1)}: links leave the repository (only http(s) links to public sites are allowed)"
        host = re.sub(r"^[a-zA-Z]+://", "", target).split("/")[0].split(":")[0].lower()
        if not host or PRIVATE_HOST.search(host):
            return "a link to a private or local host"
        return None
    if target.startswith("//") or target.startswith("/"):
        return "an absolute path; link relative to the page instead"
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    try:
        dest.relative_to(REPO)
    except ValueError:
        return f"{path_part} is outside the repository"
    if not dest.exists():
        return f"{path_part} does not exist"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"#{anchor} points into {path_part}, which is not a markdown page"
        if anchor not in anchors(dest):
            return f"{dest.relative_to(REPO)} has no heading with the anchor #{anchor}"
    return None


def marked_blocks(kind: str = "demo-output", page: Optional[Path] = None):
    """(page, key, first content line index, end index, content lines) of each marked code block."""
    blocks = []
    for p in [page] if page else PAGES:
        lines = p.read_text(encoding="utf-8").split("\n")
        i = 0
        while i < len(lines):
            m = MARKER.match(lines[i])
            if m and m.group(1) == kind:
                assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), f"{p.name}:{i + 1}: the marker must be followed by a code block"
                end = next((j for j in range(i + 2, len(lines)) if FENCE.match(lines[j])), None)
                assert end is not None, f"{p.name}:{i + 2}: unclosed code block"
                blocks.append((p, m.group(2), i + 2, end, lines[i + 2:end]))
                i = end
            i += 1
    return blocks


def example(key: str) -> str:
    blocks = [b for b in marked_blocks("example", REPO / "docs" / "contributing.md") if b[1] == key]
    assert len(blocks) == 1, f"docs/contributing.md needs exactly one <!-- example: {key} --> block"
    return "\n".join(blocks[0][4]) + "\n"


def repo_files() -> List[Path]:
    if (REPO / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
        return [REPO / f for f in out.stdout.splitlines() if (REPO / f).is_file()]
    skip = {".git", ".venv", "output", "data", "__pycache__", ".pytest_cache"}
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(folder) / f for f in files]
    return found


# --------------------------------------------------------------------------- fast: links, names
def test_pages_exist_and_readme_starts_with_the_two_commands():
    names = {p.name for p in PAGES}
    for page in ("datasets.md", "experiments.md", "feature-cache.md", "sweeps.md", "own-data.md", "dassl.md", "contributing.md", "development.md"):
        assert page in names, f"docs/{page} is missing"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first = text.split("```")[1].splitlines()[1:]  # the tool that checks a fresh clone runs exactly this block
    commands = [ln.split("#")[0].strip() for ln in first if ln.strip() and not ln.lstrip().startswith("#")]
    assert commands == ["make demo", "make test"], commands
    assert len(text.splitlines()) <= 320, "README.md should stay short: move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_stays_in_the_repository_and_resolves(page):
    problems = [f"{page.relative_to(REPO)}:{no}: ({target}) {why}" for no, target in links(page) if (why := link_problem(page, target))]
    assert not problems, "\n".join(problems)


def test_link_checker_catches_what_it_should(tmp_path):
    """The checker itself: each bad kind of link is reported, good ones pass."""
    page = REPO / "docs" / "datasets.md"
    assert link_problem(page, "experiments.md") is None
    assert link_problem(page, "experiments.md#make-demo-and-what-it-prints") is None
    assert link_problem(page, "#downloading") is None
    assert link_problem(page, "https://github.com/KaiyangZhou/Dassl.pytorch") is None
    assert "does not exist" in link_problem(page, "nope.md")
    assert "no heading" in link_problem(page, "experiments.md#no-such-heading")
    assert "outside the repository" in link_problem(page, "../../elsewhere/design.md")
    assert "absolute" in link_problem(page, "/etc/passwd")
    assert "leave" in link_problem(page, "file:///etc/passwd")
    assert "private" in link_problem(page, "http://localhost:8000/x")
    assert slug("Few-shot runs: `main.sh`, `zeroshot.sh`, `coop.sh`") == "few-shot-runs-mainsh-zeroshotsh-coopsh"
    assert slug("What's inside") == "whats-inside"
    doc = tmp_path / "x.md"
    doc.write_text("# A\n## A\n```\n[not](a-link.md)\n```\nsee `[code](nope.md)` and [b](#a-1)\n")
    assert anchors(doc) == {"a", "a-1"} and [t for _, t in links(doc)] == ["#a-1"]


def test_no_file_names_the_sibling_folder_or_the_old_readme_fragments():
    """Users never have the development machine's sibling folder; only CI's own script may use it."""
    needles = ["../" + "shared", "readme" + "_parts"]  # spelled apart so this file does not match itself
    allowed = {REPO / ".ci" / "run"}  # CI installs Dassl from a wheel kept there
    hits = []
    for path in repo_files():
        if path in allowed:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(REPO)}: {n}" for n in needles if n in text]
    assert not hits, "\n".join(hits)


def test_every_marked_block_is_known_and_the_contributing_example_parses():
    keys = {b[1] for b in marked_blocks()}
    assert keys and keys <= set(SCENARIOS), f"unknown demo-output blocks: {sorted(keys - set(SCENARIOS))}"
    compile(example("trainer"), "docs/contributing.md (example: trainer)", "exec")
    assert "TEXT_INIT_PROBE" in yaml.safe_load(example("trainer-config"))["TRAINER"]


# ------------------------------------------------------------------ normalising example outputs
TABLE_SEP = re.compile(r"^\|[\s:|-]+\|$")
ACCURACY_CELL = re.compile(r"^(-?\d+\.\d\d( ± \d+\.\d\d)?( \(n=\d+\))?|missing.*)$")
HEX = re.compile(r"(?<![0-9a-f])[0-9a-f]{12,}(?![0-9a-f])")
FLOAT = re.compile(r"\d+\.\d+")


def normalise(lines: List[str]) -> List[str]:
    """Shape of an output: table separators and blank lines dropped; accuracy cells -> '#';
    hashes -> '<hex>'; outside tables, decimals (timings, losses, percentages) -> '<num>'."""
    out = []
    for line in lines:
        line = line.rstrip()
        if not line.strip() or TABLE_SEP.match(line):
            continue
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out.append("| " + " | ".join("#" if ACCURACY_CELL.match(c) else HEX.sub("<hex>", c) for c in cells) + " |")
        else:
            out.append(FLOAT.sub("<num>", HEX.sub("<hex>", line)))
    return out


def realign_tables(lines: List[str]) -> List[str]:
    """Pad the cells of each github table to its column widths (after paths in it were replaced)."""
    is_row = lambda ln: ln.startswith("|") and ln.rstrip().endswith("|") and len(ln.strip()) > 1  # noqa: E731
    out, i = [], 0
    while i < len(lines):
        j = i
        while j < len(lines) and is_row(lines[j]):
            j += 1
        if j == i:
            out.append(lines[i])
            i += 1
            continue
        rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[i:j]]
        seps = [bool(TABLE_SEP.match(ln.strip())) for ln in lines[i:j]]
        if len({len(r) for r in rows}) == 1:
            widths = [max([len(r[k]) for r, s in zip(rows, seps) if not s] or [1]) for k in range(len(rows[0]))]
            out += ["|" + "|".join("-" * (w + 2) for w in widths) + "|" if s else
                    "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r, s in zip(rows, seps)]
        else:
            out += lines[i:j]
        i = j
    return out


def segments(block: List[str]) -> List[List[str]]:
    parts, cur = [], []
    for line in block:
        if line.strip() == "...":
            parts.append(cur)
            cur = []
        else:
            cur.append(line)
    return parts + [cur]


def mismatch(block: List[str], actual: List[str]) -> Optional[str]:
    """None when the block (possibly an excerpt with '...' lines) has the shape of ``actual``."""
    want = [normalise(s) for s in segments(block)]
    have = normalise(actual)
    if len(want) == 1:
        return None if want[0] == have else "differs"
    if have[: len(want[0])] != want[0]:
        return "its first part is not how the output starts"
    pos = len(want[0])
    for part in want[1:-1]:
        found = next((i for i in range(pos, len(have) - len(part) + 1) if have[i : i + len(part)] == part), None)
        if found is None:
            return f"a middle part is missing: {part[:3]}"
        pos = found + len(part)
    last = want[-1]
    if last and (len(have) - len(last) < pos or have[len(have) - len(last):] != last):
        return "its last part is not how the output ends"
    return None


def updated(block: List[str], actual: List[str]) -> List[str]:
    """The block rewritten from ``actual``, keeping a hand-trimmed excerpt's first and last lengths."""
    parts = segments(block)
    if len(parts) == 1:
        return actual
    head, tail = len(parts[0]), len(parts[-1])
    return actual[:head] + ["..."] + (actual[len(actual) - tail:] if tail else [])


# --------------------------------------------------------------------------------- the replay
LEGACY = {"results": "clip_adapter.results", "sweep": "clip_adapter.sweep", "doctor": "clip_adapter.data.doctor",
          "download": "clip_adapter.data.download"}


def tool(sub: str) -> List[str]:
    """``clip-adapter <sub>`` as ``python -m clip_adapter <sub>``; on a tree without that one command,
    the module that implemented the sub-command before it."""
    if importlib.util.find_spec("clip_adapter.__main__") is not None:
        return [sys.executable, "-m", "clip_adapter", sub]
    return [sys.executable, "-m", LEGACY[sub]]


def run_tool(sub: str, args: List[str], cwd: Path) -> Tuple[int, str, str]:
    """``clip-adapter <sub> ARGS`` run in this process, as ``python -m`` runs it: (rc, stdout, stderr)."""
    argv = tool(sub)[2:] + [str(a) for a in args]  # [module, (sub,) args...]
    out, err = io.StringIO(), io.StringIO()
    rc = 0
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(cwd)
        mp.setattr(sys, "argv", [argv[0], *argv[1:]])
        try:
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return rc, out.getvalue(), err.getvalue()


def train_main(argv: List[str]) -> Tuple[int, str]:
    """``python train.py ARGV`` in this process (no interpreter start per run); returns (rc, stderr)."""
    from clip_adapter.app.train import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def dry_run_commands(text: str) -> List[List[str]]:
    """The ``train.py`` arguments of each ``dry-run:`` line the scripts print under DRY_RUN=1 (the planner
    prints ``python -m clip_adapter.app.train ...``; older scripts printed ``python train.py ...``)."""
    cmds = []
    for line in text.splitlines():
        if line.startswith("dry-run: "):
            argv = shlex.split(line[len("dry-run: "):])
            cmds.append(argv[next(i for i, a in enumerate(argv) if a.endswith("train.py") or a == "clip_adapter.app.train") + 1:])
    return cmds


class Replay:
    """The steps the pages describe, in a folder laid out like the repository root (data/, output/)."""

    def __init__(self, work: Path):
        self.work = work
        self.data = work / "data"
        self.data.mkdir()  # empty: the smoke datasets are generated into it on first use, as in a fresh clone
        env = dict(os.environ)
        for key in ("CLIP_ADAPTER_FEATURE_CACHE", "SEEDS", "DRY_RUN", "OUTPUT", "SOURCE", "SHOTS"):
            env.pop(key, None)
        env.update(DATA=str(self.data), PYTHON=sys.executable, PYTHONUNBUFFERED="1")
        self.env = env
        self.outputs: Dict[str, str] = {}

    def run(self, argv, **env) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in argv], cwd=self.work, env=dict(self.env, **env), capture_output=True, text=True, timeout=600)

    def shown(self, text: str) -> str:
        """The output as on the user's machine: temporary folders replaced, tables aligned again."""
        for real, shown in sorted({str(self.work): SHOWN_ROOT, str(REPO): SHOWN_ROOT,
                                   os.environ.get("CLIP_ADAPTER_WEIGHTS", "~"): SHOWN_WEIGHTS}.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(real, shown)
        return "\n".join(realign_tables(text.split("\n")))

    def record(self, key: str, *parts: str) -> None:
        self.outputs[key] = self.shown("".join(p if p.endswith("\n") or not p else p + "\n" for p in parts)).rstrip("\n")

    def in_process(self, cmds: List[List[str]], cache: Path) -> List[Tuple[int, str]]:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(self.work)
            mp.setenv("CLIP_ADAPTER_FEATURE_CACHE", str(cache))
            return [train_main(argv) for argv in cmds]

    # ------------------------------------------------------------------ the steps, in order
    def demo(self) -> None:
        """`make demo` (its runs in-process), then `clip-adapter results output_demo`."""
        out = self.work / "output_demo"
        proc = self.run(["bash", REPO / "scripts" / "demo.sh"], DRY_RUN="1", OUTPUT=str(out))
        log = out / "demo.log"
        cmds = dry_run_commands(log.read_text() if log.is_file() else "")
        assert cmds, f"DRY_RUN=1 scripts/demo.sh listed no runs:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        for argv, (rc, err) in zip(cmds, self.in_process(cmds, out / "feature_cache")):
            assert rc == 0, f"demo run failed: train.py {shlex.join(argv)}\n{err[-2000:]}"
        rc, out, err = run_tool("results", ["output_demo", "--include-offline-checks"], self.work)
        assert rc == 0, err[-2000:]
        self.record("results", out)

    def own_data(self) -> None:
        shutil.copytree(self.data / "smoke" / "images" / "train", self.data / "my_data")
        proc = self.run(["bash", REPO / "scripts" / "main.sh", "custom_example", "tiny", "4"], SEEDS="1")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        self.record("own-data-run", "$ cp -r data/smoke/images/train data/my_data\n",
                    "$ SEEDS=1 bash scripts/main.sh custom_example tiny 4\n", proc.stdout)
        # one image gone: the next run stops on the generated split (the image is put back after)
        image, aside = self.data / "my_data" / "cat" / "cat_000.png", self.work / "cat_000.png"
        os.rename(image, aside)
        try:
            proc = self.run(["bash", REPO / "scripts" / "main.sh", "custom_example", "tiny", "4"], SEEDS="2")
        finally:
            os.rename(aside, image)  # a rename keeps size and mtime: the cache still knows the image
        assert proc.returncode != 0, proc.stdout[-2000:]
        self.record("own-data-stale", "$ rm data/my_data/cat/cat_000.png\n",
                    "$ SEEDS=2 bash scripts/main.sh custom_example tiny 4\n", proc.stdout, proc.stderr)

    def doctor(self) -> None:
        args = ["smoke", "custom_example", "--root", self.data]
        shown = "clip-adapter doctor smoke custom_example --root $DATA"
        rc, out, err = run_tool("doctor", args, self.work)
        assert rc == 0, out[-2000:] + err[-2000:]
        self.record("doctor", f"$ {shown}\n", out)
        # three things broken on purpose
        (self.data / "my_data" / "guitar" / "guitar_007.png").write_text("<html><body>502 Bad Gateway</body></html>\n")
        fewshot = self.data / "smoke" / "split_fewshot" / "shot_4-seed_1.json"
        subset = json.loads(fewshot.read_text())
        subset["train"][0][0] = "train/apple/apple_old.png"
        fewshot.write_text(json.dumps(subset, indent=2))
        # the largest shard of the first cache folder: shard names hash their keys, which hold the images'
        # mtimes, so "the first shard" by name would be a different one in each replay
        first = sorted(p for p in (self.work / "output" / "feature_cache").iterdir() if p.is_dir() and p.name != "text")[0]
        shard = max(first.glob("shard-*.npz"), key=lambda p: p.stat().st_size)
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        rc, out, _ = run_tool("doctor", args, self.work)
        _, fixed, _ = run_tool("doctor", args + ["--fix"], self.work)
        last = (fixed.strip().splitlines() or [""])[-1]
        self.record("doctor-broken", f'$ {shown}; echo "exit $?"\n', out, f"exit {rc}\n", f"$ {shown} --fix | tail -1\n", last)

    def refusal(self) -> None:
        """A class-bound model evaluated on other classes (SOURCE=smoke xd_train.sh, xd_test.sh smoke_other)."""
        plan = []
        for script, args in (("xd_train.sh", ["1", "LinearProbeCLIP", "tiny"]), ("xd_test.sh", ["smoke_other", "1", "LinearProbeCLIP", "tiny"])):
            proc = self.run(["bash", REPO / "scripts" / script, *args], DRY_RUN="1", SOURCE="smoke")
            assert proc.returncode == 0, proc.stderr[-2000:]
            plan += dry_run_commands(proc.stdout)
        assert len(plan) == 2, plan
        (rc_train, err_train), (rc_test, err_test) = self.in_process(plan, Path("output") / "feature_cache")
        assert rc_train == 0, err_train[-2000:]
        assert rc_test == 2, err_test[-2000:]
        self.record("transfer-refusal", *[ln for ln in err_test.splitlines() if ln.startswith("error:")])


SCENARIOS = ("results", "own-data-run", "own-data-stale", "doctor", "doctor-broken", "transfer-refusal")


def rewrite_blocks(outputs: Dict[str, str]) -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").split("\n")
        for _, key, start, end, block in reversed(marked_blocks(page=page)):
            if key in outputs:
                lines[start:end] = updated(block, outputs[key].split("\n"))
        page.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Dict[str, str]:
    r = Replay(tmp_path_factory.mktemp("clip-adapter"))
    r.demo()
    r.own_data()
    r.doctor()
    r.refusal()
    assert set(r.outputs) == set(SCENARIOS)
    if UPDATE:
        rewrite_blocks(r.outputs)
    return r.outputs


@pytest.mark.slow
@pytest.mark.parametrize("page,key,line", [(b[0], b[1], b[2]) for b in marked_blocks()],
                         ids=lambda v: v.name if isinstance(v, Path) else str(v))
@pytest.mark.slow
def test_example_output_matches_what_the_tools_print(replay, page, key, line):
    block = next(b for b in marked_blocks(page=page) if b[1] == key and (UPDATE or b[2] == line))[4]
    actual = replay[key].split("\n")
    why = mismatch(block, actual)
    assert why is None, (
        f"{page.relative_to(REPO)}:{line} <!-- demo-output: {key} --> no longer matches the replay ({why}).\n"
        f"Rewrite it with CLIP_ADAPTER_UPDATE_DOCS=1 (then read the diff), or by hand. The replay printed:\n"
        + "\n".join(actual)
    )


def test_excerpt_matching_and_rewriting():
    out = ["a", "| M | Smoke |", "|---|---|", "| x | 10.00 ± 0.47 |", "took 1.5s", "end"]
    assert mismatch(["a", "| M | Smoke |", "| x | 99.00 (n=1) |", "took 9.1s", "end"], out) is None
    assert mismatch(["a", "...", "end"], out) is None
    assert mismatch(["a", "...", "| x | 1.00 |", "...", "end"], out) is None
    assert mismatch(["a", "...", "| y | 1.00 |", "...", "end"], out) is not None  # a row label differs
    assert mismatch(["b", "...", "end"], out) is not None
    assert mismatch(["a", "| M | Smoke |", "| x | 10.00 ± 0.47 |", "end"], out) is not None  # a line left out
    assert realign_tables(["| a | bb |", "|---|---|", "| ccc | d |", "x"]) == ["| a   | bb |", "|-----|----|", "| ccc | d  |", "x"]
    assert updated(["old", "...", "older"], out) == ["a", "...", "end"]
    assert updated(["old"], out) == out


@pytest.mark.slow
def test_cli_sub_commands_named_in_the_docs_exist():
    """Every ``clip-adapter <sub-command>`` the pages use answers ``--help``."""
    if importlib.util.find_spec("clip_adapter.__main__") is None:
        pytest.skip("this tree has no `clip-adapter` command yet (python -m clip_adapter)")
    subs = set()
    for page in PAGES:
        subs |= set(re.findall(r"(?<![\w-])clip-adapter ([a-z][\w-]*)", page.read_text(encoding="utf-8")))
    assert subs
    for sub in sorted(subs):
        proc = subprocess.run(tool(sub) + ["--help"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"`clip-adapter {sub} --help` failed: {proc.stderr[-500:]}"


# ---------------------------------------------------------- the contributor guide's example
DRIVER = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.nn.functional as F
    from clip_adapter.plugins import config_dirs, load_all

    root, out, smoke = sys.argv[1:4]
    report = load_all()
    assert report.loaded == ["my_methods"], report.loaded
    assert len(report.failed) == 1 and "broken" in report.failed[0], report.failed
    cfgs = [os.path.join(d, "trainers", "TextInitProbe", "tiny.yaml") for d in config_dirs()]
    cfg = [c for c in cfgs if os.path.isfile(c)]
    assert len(cfg) == 1 and "my_methods" in cfg[0], cfgs

    from clip_adapter.app.train import main
    common = ["--root", root, "--seed", "1", "--trainer", "TextInitProbe", "--dataset-config-file", smoke, "--config-file", cfg[0]]
    assert main(common + ["--output-dir", out + "/run", "DATASET.NUM_SHOTS", "4"]) == 0
    res = json.load(open(out + "/run/results.json"))
    assert res["trainer"] == "TextInitProbe" and res["epochs"] == 5 and res["hyperparameters"]["init"] == "text", res
    assert main(common + ["--output-dir", out + "/eval", "--eval-only", "--model-dir", out + "/run", "DATASET.NUM_SHOTS", "4"]) == 0
    assert json.load(open(out + "/eval/results.json"))["correct"] == res["correct"]
    assert main(common + ["--output-dir", out + "/bad", "DATASET.NUM_SHOTS", "4", "TRAINER.TEXT_INIT_PROBE.INIT", "zeros"]) == 2

    # as the example says: untrained with INIT "text", it is zero-shot CLIP exactly
    from clip_adapter.config import setup_cfg
    from clip_adapter.registry import TRAINERS
    c = setup_cfg(smoke, cfg[0], {"DATASET.ROOT": root, "OUTPUT_DIR": out + "/built", "TRAINER.NAME": "TextInitProbe", "SEED": 1},
                  ["DATASET.NUM_SHOTS", "4"])
    t = TRAINERS.get("TextInitProbe")(c).build()
    f = torch.randn(8, t.clip_info.embed_dim) * 3
    zero_shot = t.logit_scale * F.normalize(f, dim=-1) @ t.text_weights.float().t()
    assert torch.allclose(t.logits(f), zero_shot, atol=1e-5)
    assert TRAINERS.get("TextInitProbe").transfer_blocker(c)
    print("example ok")
''')


@pytest.mark.slow
def test_contributing_example_trainer_installs_as_a_plugin_and_trains(tmp_path, data_root):
    """docs/contributing.md's trainer and config, as a package declaring the entry point (next to a
    broken plugin, which is reported in one line while the other loads)."""
    site = tmp_path / "site"
    pkg = site / "my_methods"
    (pkg / "configs" / "trainers" / "TextInitProbe").mkdir(parents=True)
    (pkg / "__init__.py").write_text('import os\n\nfrom my_methods import text_init_probe  # noqa: F401\n\n'
                                     'CLIP_ADAPTER_CONFIGS = os.path.join(os.path.dirname(__file__), "configs")\n')
    (pkg / "text_init_probe.py").write_text(example("trainer"))
    (pkg / "configs" / "trainers" / "TextInitProbe" / "tiny.yaml").write_text(example("trainer-config"))
    (site / "broken_plugin.py").write_text("raise ImportError('broken on purpose')\n")
    dist = site / "my_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clip_adapter.plugins]\nmy_methods = my_methods\nbroken = broken_plugin\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    env.pop("CLIP_ADAPTER_FEATURE_CACHE", None)
    smoke = str(REPO / "configs" / "datasets" / "smoke.yaml")
    proc = subprocess.run([sys.executable, "-c", DRIVER, data_root, str(tmp_path / "out"), smoke], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "example ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if "plugin 'broken'" in ln]
    assert len(warnings) == 1 and "ImportError: broken on purpose" in warnings[0], proc.stderr[-2000:]
    assert "error: TRAINER.TEXT_INIT_PROBE.INIT must be one of text, random, got 'zeros'" in proc.stderr


def test_the_methods_table_is_the_registrys_account():
    """docs/methods.md's trainer table says, per registered trainer, what the registry says (input kind,
    fit, dependence on shots/seed, transfer, backbone families): a new or changed method fails here."""
    from clip_adapter.config import get_cfg_default
    from clip_adapter.plugins import load_all
    from clip_adapter.registry import TRAINERS

    load_all(quiet=True)
    text = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    table = text.split("<!-- trainer-table -->")[1].split("<!-- /trainer-table -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    assert sorted(rows) == TRAINERS.names()
    cfg = get_cfg_default()
    for name, (_, kind, fit, depends, transfers, families, _page) in rows.items():
        cls = TRAINERS.get(name)
        assert kind.startswith("images") == (cls.input_kind == "images"), name
        assert fit == ("none" if not cls.uses_training_data else "epochs" if cls.trains_in_epochs else "one step"), name
        assert depends == ("yes" if cls.uses_training_data else "no"), name
        assert transfers.startswith("yes") == (cls.transfer_blocker(cfg) is None), name
        assert families == (", ".join(cls.backbone_families) or "all"), name
