"""clip_adapter.app.results: offline checks kept apart, rows marked by split and selection protocol,
method order from the records, the field's published figures, and the two base-to-novel averages.

Every tree is hand-made results.json records; expected numbers are computed here from the numbers
written, never by the code under test.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from clip_adapter.app.results import load_published, main
from clip_adapter.app.results.model import DATASET_ORDER

BENCH = DATASET_ORDER  # the 11 datasets of CoOp's benchmark


def record(root: Path, rel: str, *, trainer: str, dataset: str, accuracy: float, seed: int = 1, shots: int = 16,
           backbone: str = "RN50", config: str = "rn50", subsample: str = "all", **extra) -> None:
    """A results.json with the keys engine/run.py writes that the tables read, plus ``extra`` (new fields)."""
    rec = {"format": 1, "engine": "own", "trainer": trainer, "dataset": dataset, "config": config, "backbone": backbone,
           "shots": shots, "seed": seed, "subsample": subsample, "accuracy": accuracy, "uses_training_data": True,
           "epochs": 200, "eval_only": subsample == "new", "model_dir": "", "offline_check": False, "opts": [], **extra}
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(rec))


def tables(capsys, root: Path, *args) -> tuple:
    rc = main([str(root), *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def rows_after(text: str, title_part: str) -> list:
    """Cells of the markdown table under the heading that contains ``title_part`` (without its header)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("###") and title_part in ln)
    out = []
    for ln in lines[start + 1:]:
        if ln.startswith("###"):
            break
        if ln.startswith("|") and not ln.startswith("|--"):
            out.append([c.strip() for c in ln.strip("|").split("|")])
    return out[1:]


def block(text: str, title_part: str) -> str:
    """The heading that contains ``title_part`` and everything up to the next heading."""
    start = text.index(next(ln for ln in text.splitlines() if ln.startswith("###") and title_part in ln))
    end = text.find("\n###", start + 1)
    return text[start:] if end < 0 else text[start:end]


def csv_of(capsys, root: Path, *args) -> list:
    rc, out, err = tables(capsys, root, "--format", "csv", *args)
    assert rc == 0, err
    return list(csv.DictReader(io.StringIO(out)))


# ------------------------------------------------------------ offline checks (issue 18)
def test_offline_checks_are_left_out_unless_asked_and_labelled_when_included(tmp_path, capsys):
    root = tmp_path / "out"
    for s, acc in enumerate([70.0, 71.0, 72.0], 1):
        record(root, f"real/seed{s}", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=acc, seed=s)
    record(root, "smoke/seed1", trainer="CLIP_Adapter", dataset="Smoke", accuracy=12.5, backbone="tiny", config="tiny", offline_check=True)
    record(root, "tinyreal/seed1", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=3.0, backbone="tiny", config="tiny", offline_check=True)

    rc, out, _ = tables(capsys, root)
    assert rc == 0 and "Smoke" not in out and "(tiny)" not in out and "3.00" not in out
    assert "3 finished runs" in out and "2 offline-check run(s) (smoke data or a tiny backbone) left out; --include-offline-checks shows them" in out
    assert rows_after(out, "16 shots") == [["CLIP_Adapter (rn50)", "71.00 ± 0.82"]]

    rc, out, _ = tables(capsys, root, "--include-offline-checks")
    rows = {r[0]: r[1:] for r in rows_after(out, "16 shots")}
    assert rows == {"CLIP_Adapter (rn50)": ["71.00 ± 0.82", "missing", "missing (1/2)"],
                    "CLIP_Adapter (tiny) (offline check)": ["3.00 (n=1)", "12.50 (n=1)", "7.75"]}
    assert "left out" not in out
    offline = {r["dataset"]: r["offline_check"] for r in csv_of(capsys, root, "--include-offline-checks") if r["config"] == "tiny"}
    assert offline == {"Caltech101": "true", "Smoke": "true", "Average": "true"}
    _, err = tables(capsys, root, "--format", "csv")[1:]
    assert "2 offline-check run(s)" in err  # the CSV stays clean; the note goes to stderr


def test_a_tree_of_offline_checks_only_needs_the_flag(tmp_path, capsys):
    root = tmp_path / "out"
    record(root, "smoke/seed1", trainer="ZeroshotCLIP", dataset="Smoke", accuracy=20.0, backbone="tiny", config="tiny",
           offline_check=True, uses_training_data=False, epochs=0)
    rc, out, err = tables(capsys, root)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: all 1 runs under") and "--include-offline-checks" in err
    rc, out, _ = tables(capsys, root, "--include-offline-checks")
    assert rc == 0 and "[offline checks: smoke data or a tiny backbone" in out
    assert rows_after(out, "zero-shot") == [["ZeroshotCLIP (tiny)", "20.00 (n=1)"]]  # a whole table of them: the title says so


# --------------------------------------------------- split provenance, selection protocol
def test_rows_not_on_coops_split_are_marked_and_kept_apart(tmp_path, capsys):
    root = tmp_path / "out"
    coop = {"name": "split_zhou_EuroSAT.json", "sha256": "a" * 64, "origin": "coop"}
    built = {"name": "split_built_EuroSAT.json", "sha256": "b" * 64, "origin": "built"}
    for s, acc in enumerate([80.0, 82.0], 1):
        record(root, f"coop/seed{s}", trainer="CoOp", dataset="EuroSAT", accuracy=acc, seed=s, split_file=coop)
        record(root, f"built/seed{s}", trainer="CoOp", dataset="EuroSAT", accuracy=acc - 20, seed=s, split_file=built)
    record(root, "old/seed1", trainer="CLIP_Adapter", dataset="EuroSAT", accuracy=75.0)  # no split_file: unknown, no mark
    rc, out, _ = tables(capsys, root, "--expected-seeds", "2")
    rows = {r[0]: r[1] for r in rows_after(out, "16 shots")}
    assert rows == {"CLIP_Adapter (rn50)": "75.00 (n=1)", "CoOp (rn50)": "81.00 ± 1.00", "CoOp (rn50) ‡": "61.00 ± 1.00"}
    assert "‡ not on CoOp's split" in out
    assert {r["split_origin"] for r in csv_of(capsys, root) if r["trainer"] == "CoOp"} == {"", "built"}

    # one cell whose seeds ran on different split files is averaged but reported
    record(root, "coop/seed3", trainer="CoOp", dataset="EuroSAT", accuracy=81.0, seed=3, split_file=dict(coop, sha256="c" * 64))
    rc, out, err = tables(capsys, root)
    assert rc == 0 and "CoOp (rn50) on EuroSAT (16 shots): its seeds ran on 2 different split files" in err


def test_selection_protocols_are_never_averaged_together_and_test_selection_is_marked(tmp_path, capsys):
    root = tmp_path / "out"
    val = {"protocol": "fewshot_val", "searches": [{"knob": "alpha", "tried": [{"value": 0.5, "score": 70.0}], "chosen": 0.5}]}
    test = {"protocol": "test", "searches": []}
    for ds in ("Caltech101", "EuroSAT"):
        record(root, f"{ds}/val/seed1", trainer="TipAdapterF", dataset=ds, accuracy=60.0, selection=val)
        record(root, f"{ds}/test/seed1", trainer="TipAdapterF", dataset=ds, accuracy=66.0, selection=test)
    record(root, "Caltech101/old/seed1", trainer="TipAdapterF", dataset="Caltech101", accuracy=50.0)  # unrecorded: its own row
    rc, out, _ = tables(capsys, root, "--expected-seeds", "1")
    rows = rows_after(out, "16 shots")
    assert ["TipAdapterF (rn50)", "", "50.00", "missing", "missing (1/2)"] in rows
    assert ["TipAdapterF (rn50)", "few-shot val", "60.00", "60.00", "60.00"] in rows
    assert ["TipAdapterF (rn50) †", "test", "66.00", "66.00", "66.00"] in rows and len(rows) == 3
    header = next(ln for ln in out.splitlines() if ln.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")][:2] == ["Method", "Selection"]
    assert "† hyperparameters chosen on the test split: only to reproduce a published figure" in out
    assert {r["selection"] for r in csv_of(capsys, root)} == {"", "fewshot_val", "test"}

    # one protocol throughout: no column, one line saying which
    one = tmp_path / "one"
    record(one, "a/seed1", trainer="TipAdapterF", dataset="Caltech101", accuracy=60.0, selection=val)
    rc, out, _ = tables(capsys, one)
    assert "Selection" not in out and "hyperparameters selected on: few-shot val" in out

    bad = tmp_path / "bad"
    record(bad, "a/seed1", trainer="TipAdapterF", dataset="Caltech101", accuracy=60.0, selection={"protocol": "val"})
    record(bad, "b/seed1", trainer="TipAdapterF", dataset="Caltech101", accuracy=60.0)
    rc, out, err = tables(capsys, bad)
    assert rc == 0 and "skipped" in err and "selection.protocol is 'val'" in err


def test_methods_are_ordered_and_classified_from_their_records(tmp_path, capsys):
    root = tmp_path / "out"
    record(root, "ca/seed1", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=90.0, shots=4)
    record(root, "coop/seed1", trainer="CoOp", dataset="Caltech101", accuracy=88.0, shots=4)
    record(root, "zs/seed1", trainer="ZeroshotCLIP", dataset="Caltech101", accuracy=85.0, uses_training_data=False, epochs=0)
    # a one-step fit records 0 epochs but uses training data: its number depends on shots (not training-free)
    for k, acc in ((4, 70.0), (16, 80.0)):
        record(root, f"lp{k}/seed1", trainer="LinearProbeCLIP", dataset="Caltech101", accuracy=acc, shots=k, epochs=0,
               display_name="Linear probe")  # the name the record gives labels the row
    rc, out, _ = tables(capsys, root, "--expected-seeds", "1")
    assert [r[0] for r in rows_after(out, "4 shots")] == ["ZeroshotCLIP (rn50)", "Linear probe (rn50)", "CLIP_Adapter (rn50)", "CoOp (rn50)"]
    assert rows_after(out, "16 shots") == [["ZeroshotCLIP (rn50)", "85.00"], ["Linear probe (rn50)", "80.00"]]


# --------------------------------------------------------------- published figures
def write_benchmark(root: Path, trainer: str, shots: int, base: float, backbone: str = "RN50", config: str = "rn50") -> list:
    """One run per benchmark dataset; returns the accuracies written."""
    accs = [base + i * 0.5 for i in range(len(BENCH))]
    for ds, acc in zip(BENCH, accs):
        record(root, f"{trainer}/{ds}/seed1", trainer=trainer, dataset=ds, accuracy=acc, shots=shots, backbone=backbone, config=config)
    return accs


def test_field_averages_side_by_side_with_published_only_rows(tmp_path, capsys):
    root = tmp_path / "out"
    tipf = write_benchmark(root, "TipAdapterF", 16, 70.0)
    ca = write_benchmark(root, "CLIP_Adapter", 16, 68.0)
    rc, out, err = tables(capsys, root, "--published", "--expected-seeds", "1")
    assert rc == 0, err
    rows = {(r[0], r[1]): r[2:] for r in rows_after(out, "Published vs ours, 16 shots")}
    ours = statistics.fmean(tipf)
    assert rows[("TipAdapterF (rn50)", "Average (11 datasets)")] == [f"{ours:.2f}", "75.83 †", f"{ours - 75.83:+.2f}", "tip_adapter_exp_log, computed"]
    assert rows[("CLIP_Adapter (rn50)", "Average (11 datasets)")][1:] == ["74.44", f"{statistics.fmean(ca) - 74.44:+.2f}", "tip_adapter_exp_log, computed"]
    assert rows[("TipAdapterF (rn50)", "EuroSAT")][1] == "84.54 †"  # per dataset, from the same exp.log
    # methods not run here: reference rows, labelled, with their source and how the figure was obtained
    assert rows[("Tip-X (published only)", "Average (11 datasets)")] == ["-", "71.40", "", "gda_exp_log, computed"]
    assert rows[("GDA (published only)", "Average (11 datasets)")] == ["-", "76.05", "", "gda_exp_log, computed"]
    assert rows[("CLAP (published only)", "Average (11 datasets)")] == ["-", "74.57", "", "clap_paper_notes (secondary)"]
    assert rows[("ZeroshotCLIP (published only)", "Average (11 datasets)")][1] == "58.89"
    assert ("CLIP-LoRA (published only)", "Average (11 datasets)") not in rows  # ViT-B/16 only
    notes = block(out, "Published vs ours, 16 shots")
    assert "- TipAdapterF (tip_adapter_exp_log): its best epoch was chosen on test" in notes
    assert "- GDA (gda_exp_log): alpha searched on the full val split (ImageNet: val = test)" in notes
    assert "† hyperparameters chosen on the test split by the published source" in notes
    assert "- clap_paper_notes: CLAP" in notes and "[secondary]" in notes
    avg = next(r for r in csv_of(capsys, root, "--published") if r["trainer"] == "TipAdapterF" and r["dataset"] == "Average")
    assert float(avg["published"]) == 75.83 and avg["published_source"] == "tip_adapter_exp_log, computed"

    # a table without all 11 datasets is never compared with an 11-dataset average
    two = tmp_path / "two"
    for ds in ("Caltech101", "EuroSAT"):
        record(two, f"{ds}/seed1", trainer="GDA", dataset=ds, accuracy=80.0)
    rc, out, _ = tables(capsys, two, "--published")
    assert "76.05" not in out and "(no published figures for these methods/backbones at 16 shots)" in out
    assert "published 11-dataset averages of 8 other method(s) (APE, APE-T, CLAP, CLIP_Adapter, Tip-X, TipAdapter, TipAdapterF, ZeroshotCLIP)" in out and "are listed when the table has all 11 datasets" in out


def test_published_file_labels_and_checks_its_figures():
    figures, sources = load_published()
    by = {}
    for f in figures:
        by.setdefault((f["setting"], f["method"], f["backbone"], f["dataset"], f.get("shots"), f["source"]), f)
    # each 'computed' average from the Tip-Adapter exp.log equals the mean of that file's per-dataset figures
    for (setting, method, bb, ds, shots, src), f in by.items():
        if src == "tip_adapter_exp_log" and ds == "Average":
            per = [by[(setting, method, bb, d, shots, src)]["accuracy"] for d in BENCH]
            assert f["how"] == "computed" and round(statistics.fmean(per), 2) == pytest.approx(f["accuracy"], abs=0.006), (method, shots)
    # an HM labelled as the HM of the averages is one; GDA's is the mean of per-dataset HMs (78.72, not 78.97)
    for f in figures:
        if f["setting"] == "base2new":
            hm = 2 * f["base"] * f["new"] / (f["base"] + f["new"])
            if f["hm_definition"] == "hm_of_averages":
                assert hm == pytest.approx(f["hm"], abs=0.02), f["method"]
            else:
                assert abs(hm - f["hm"]) > 0.1 and f["method"] == "GDA"
    assert {f["how"] for f in figures if f["dataset"] == "Average"} == {"computed", "quoted", "secondary"}
    assert all(sources[f["source"]]["secondary"] for f in figures if f.get("how") == "secondary")
    tipf = [f for f in figures if f["method"] == "TipAdapterF" and f["source"] == "tip_adapter_exp_log"]
    assert len(tipf) == 60 and all(f["selection"] == "test" for f in tipf)


# --------------------------------------------------------------- base-to-novel HM
def test_base2new_prints_both_averages_labelled_and_compares_like_with_like(tmp_path, capsys):
    root = tmp_path / "out"
    base = {ds: 90.0 - i for i, ds in enumerate(BENCH)}
    new = {ds: 45.0 + 4 * i for i, ds in enumerate(BENCH)}
    for trainer, shift in (("CoCoOp", 0.0), ("GDA", 3.0)):
        for ds in BENCH:
            for sub, acc in (("base", base[ds] + shift), ("new", new[ds] + shift)):
                record(root, f"b2n/test_{sub}/{ds}/{trainer}/seed1", trainer=trainer, dataset=ds, accuracy=acc, subsample=sub,
                       backbone="ViT-B/16", config="vit_b16_c2", eval_only=True, model_dir="x")
    rc, out, err = tables(capsys, root, "--published", "--expected-seeds", "1")
    assert rc == 0, err
    hm = lambda b, n: 2 * b * n / (b + n)  # noqa: E731
    ab, an = statistics.fmean(base.values()), statistics.fmean(new.values())
    mean_hm = statistics.fmean(hm(base[d], new[d]) for d in BENCH)
    rows = {(r[0], r[1]): r[2:] for r in rows_after(out, "Base-to-novel")}
    assert rows[("CoCoOp (vit_b16_c2)", "EuroSAT")][2] == f"{hm(base['EuroSAT'], new['EuroSAT']):.2f}"
    assert rows[("CoCoOp (vit_b16_c2)", "Average (HM of averaged base and new)")] == [f"{ab:.2f}", f"{an:.2f}", f"{hm(ab, an):.2f}"]
    assert rows[("CoCoOp (vit_b16_c2)", "Average (mean of per-dataset HMs)")] == ["", "", f"{mean_hm:.2f}"]
    assert abs(hm(ab, an) - mean_hm) > 0.1  # the two definitions differ on these numbers
    assert "HM = harmonic mean of the seed-mean Base and New" in out
    b = {r["metric"]: float(r["mean"]) for r in csv_of(capsys, root) if r["trainer"] == "CoCoOp" and r["dataset"] == "Average"}
    assert b["hm"] == pytest.approx(hm(ab, an), abs=1e-4) and b["hm (mean of per-dataset HMs)"] == pytest.approx(mean_hm, abs=1e-4)

    cmp_rows = {(r[0], r[1]): r[2:] for r in rows_after(out, "Published vs ours, base-to-novel")}
    assert cmp_rows[("CoCoOp (vit_b16_c2)", "Average HM (HM of averaged base and new)")][1:] == ["75.83", f"{hm(ab, an) - 75.83:+.2f}", "maple_readme, quoted"]
    assert cmp_rows[("CoCoOp (vit_b16_c2)", "Average Base")][1] == "80.47"
    assert ("CoCoOp (vit_b16_c2)", "Average HM (mean of per-dataset HMs)") not in cmp_rows  # MaPLe's HM is the other kind
    g_mean_hm = statistics.fmean(hm(base[d] + 3, new[d] + 3) for d in BENCH)
    assert cmp_rows[("GDA (vit_b16_c2)", "Average HM (mean of per-dataset HMs)")][1:3] == ["78.72", f"{g_mean_hm - 78.72:+.2f}"]
    assert ("GDA (vit_b16_c2)", "Average HM (HM of averaged base and new)") not in cmp_rows
    assert cmp_rows[("PromptSRC (published only)", "Average HM (HM of averaged base and new)")] == ["-", "79.97", "", "promptsrc_readme, quoted"]
    assert "- GDA (gda_base2new_log): the HM of the averaged base and new is 78.97" in out


def test_latex_escapes_and_keeps_the_footnotes_with_the_table(tmp_path, capsys):
    root = tmp_path / "out"
    record(root, "a/seed1", trainer="CLIP_Adapter", dataset="my_data", accuracy=60.0, selection={"protocol": "test", "searches": []})
    record(root, "a/seed2", trainer="CLIP_Adapter", dataset="my_data", accuracy=62.0, seed=2, selection={"protocol": "test", "searches": []})
    rc, out, err = tables(capsys, root, "--format", "latex_booktabs", "--expected-seeds", "2")
    assert rc == 0, err
    assert r"CLIP\_Adapter (rn50) $^\dagger$ & 61.00 $\pm$ 1.00 \\" in out and r"my\_data" in out
    assert "\\bottomrule\n\\multicolumn{2}{l}{\\footnotesize $^\\dagger$ hyperparameters chosen on the test split" in out
    assert out.count(r"\begin{tabular}{lr}") == 1


def test_rows_are_grouped_by_backbone_with_readable_names(tmp_path, capsys):
    """One trainer and config name on two backbones: two rows, each named by the backbone's readable
    label (family, architecture, weights), the rows of one backbone together."""
    for seed in (1, 2, 3):
        record(tmp_path, f"a/s{seed}", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=80.0, seed=seed, config="b32",
               backbone="RN50", backbone_label="OpenAI CLIP ViT-B/32")
        record(tmp_path, f"b/s{seed}", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=70.0, seed=seed, config="b32",
               backbone="open_clip:ViT-B-32:laion2b_s34b_b79k", backbone_label="open_clip ViT-B-32 (laion2b_s34b_b79k)")
        record(tmp_path, f"c/s{seed}", trainer="ZeroshotCLIP", dataset="Caltech101", accuracy=60.0, seed=seed, config="b32",
               backbone="RN50", backbone_label="OpenAI CLIP ViT-B/32", uses_training_data=False, epochs=0)
    rc, out, _ = tables(capsys, tmp_path)
    assert rc == 0
    labels = [r[0] for r in rows_after(out, "16 shots")]
    assert any("[open_clip ViT-B-32 (laion2b_s34b_b79k)]" in label for label in labels), labels
    assert any("[OpenAI CLIP ViT-B/32]" in label for label in labels), labels
    backbones = ["open_clip" if "open_clip" in label else "openai" for label in labels]
    assert backbones == sorted(backbones, key=backbones.index)  # each backbone's rows contiguous
