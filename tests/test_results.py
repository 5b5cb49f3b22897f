"""clip_adapter.app.results: tables and plots from results.json trees (written here with known numbers).

Expected values are computed in the test from the numbers it wrote (plain arithmetic, population
std as CoOp's parser), never by calling the code under test.
"""
from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import clip_adapter.app.results as R
from clip_adapter.app.experiments import naming as V
from clip_adapter.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write_run(root: Path, rel: str, *, trainer: str, dataset: str, accuracy: float, seed: int, shots: int = 16,
              config: str = "rn50", backbone: str = "RN50", subsample: str = "all", epochs: int = 200,
              eval_only: bool = False, model_dir: str = "", opts=None) -> Path:
    """A results.json with the keys the CLI writes (see clip_adapter/engine/run.py results_payload)."""
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "format": 1, "trainer": trainer, "dataset": dataset, "config": config, "backbone": backbone,
        "shots": shots, "seed": seed, "subsample": subsample, "split": "test", "accuracy": accuracy,
        "error": 100 - accuracy, "macro_f1": accuracy, "epochs": epochs, "eval_only": eval_only,
        "model_dir": model_dir, "opts": list(opts or ["DATASET.NUM_SHOTS", str(shots)]),
    }
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def mean(xs):
    return sum(xs) / len(xs)


def pstd(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def hm(a, b):
    return 2 * a * b / (a + b)


# Known numbers: CLIP_Adapter on two datasets at 1 and 16 shots; one cell has only 2 seeds; CoOp
# lacks DTD at 1 shot; zero-shot once per dataset.
CA = {
    ("Caltech101", 1): [88.1, 88.9, 87.5],
    ("Caltech101", 16): [92.0, 92.6, 92.9],
    ("DescribableTextures", 1): [45.0, 46.5, 44.2],
    ("DescribableTextures", 16): [65.0, 66.4],
}
COOP = {("Caltech101", 1): [87.0, 86.0, 88.5], ("Caltech101", 16): [91.0, 91.5, 90.1], ("DescribableTextures", 16): [63.0, 62.0, 64.2]}
ZS = {"Caltech101": 85.92, "DescribableTextures": 42.2}
B2N = {  # (dataset, subsample) -> per-seed accuracies of CLIP_Adapter evaluation runs
    ("Caltech101", "base"): [97.0, 96.5, 97.3],
    ("Caltech101", "new"): [90.0, 91.2, 89.9],
    ("DescribableTextures", "base"): [78.0, 77.1, 79.0],
    ("DescribableTextures", "new"): [50.0, 53.3, 48.1],
}


def build_tree(root: Path) -> Path:
    for (ds, k), accs in CA.items():
        for seed, acc in enumerate(accs, 1):
            write_run(root, f"{ds}/CLIP_Adapter/rn50_{k}shots/seed{seed}", trainer="CLIP_Adapter", dataset=ds, accuracy=acc, seed=seed, shots=k)
    for (ds, k), accs in COOP.items():
        opts = ["DATASET.NUM_SHOTS", str(k), "TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"]
        for seed, acc in enumerate(accs, 1):
            cfg = "rn50_ep50" if k == 1 else "rn50"  # CoOp's per-shot schedule: still one method
            write_run(root, f"{ds}/CoOp/{cfg}_{k}shots/nctx16_cscFalse_ctpend/seed{seed}", trainer="CoOp", dataset=ds, accuracy=acc, seed=seed,
                      shots=k, opts=opts, config=cfg)
    for ds, acc in ZS.items():
        write_run(root, f"{ds}/ZeroshotCLIP/rn50/seed1", trainer="ZeroshotCLIP", dataset=ds, accuracy=acc, seed=1, shots=-1, epochs=0, eval_only=True, opts=[])
    for (ds, sub), accs in B2N.items():
        for seed, acc in enumerate(accs, 1):
            train = f"base2new/train_base/{ds}/shots_16/CLIP_Adapter/rn50/seed{seed}"
            write_run(root, f"base2new/test_{sub}/{ds}/shots_16/CLIP_Adapter/rn50/seed{seed}", trainer="CLIP_Adapter", dataset=ds,
                      accuracy=acc, seed=seed, subsample=sub, eval_only=True, model_dir=str(root / train),
                      opts=["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", sub])
            if sub == "base":  # the training run's own base score differs: the test_base run must win
                write_run(root, train, trainer="CLIP_Adapter", dataset=ds, accuracy=acc - 5.0, seed=seed, subsample="base",
                          opts=["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"])
    # a cross-dataset style evaluation (eval-only of a model trained elsewhere) is no few-shot result
    write_run(root, "xd/ImageNetV2/seed1", trainer="CLIP_Adapter", dataset="DescribableTextures", accuracy=1.0, seed=1,
              eval_only=True, model_dir="/somewhere/seed1")
    return root


@pytest.fixture
def tree(tmp_path):
    return build_tree(tmp_path / "output")


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "clip_adapter.app.results", *map(str, args)], capture_output=True, text=True, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


def csv_rows(root, *extra):
    rc, out, err = run_cli(root, "--format", "csv", *extra)
    assert rc == 0, err
    return list(csv.DictReader(io.StringIO(out)))


def test_fewshot_cells_equal_mean_and_std_of_the_files(tree):
    rows = csv_rows(tree)
    fs = {(r["trainer"], r["dataset"], r["shots"]): r for r in rows if r["table"] == "fewshot"}
    for (ds, k), accs in CA.items():
        r = fs[("CLIP_Adapter", ds, str(k))]
        assert float(r["mean"]) == pytest.approx(mean(accs), abs=1e-4)
        assert float(r["std"]) == pytest.approx(pstd(accs), abs=1e-4)
        assert int(r["n"]) == len(accs)
        assert r["seeds"] == " ".join(str(i) for i in range(1, len(accs) + 1))
    # missing run: shown as such, and the Average is not computed from the rest
    missing = fs[("CoOp", "DescribableTextures", "1")]
    assert missing["mean"] == "" and missing["n"] == "0"
    assert fs[("CoOp", "Average", "1")]["mean"] == ""
    # Average = mean of per-dataset means, only where complete
    avg16 = mean([mean(CA[("Caltech101", 16)]), mean(CA[("DescribableTextures", 16)])])
    assert float(fs[("CLIP_Adapter", "Average", "16")]["mean"]) == pytest.approx(avg16, abs=1e-4)
    # zero-shot is shot-independent: in every shot table, from its single run
    for k in ("1", "16"):
        assert float(fs[("ZeroshotCLIP", "Caltech101", k)]["mean"]) == pytest.approx(ZS["Caltech101"])
    # the eval-only cross-dataset run (accuracy 1.0) was not averaged into DTD
    assert all(float(r["mean"]) > 10 for r in rows if r["mean"] and r["table"] == "fewshot")


def test_github_table_cells_and_seed_counts(tree):
    rc, out, err = run_cli(tree)
    assert rc == 0, err
    a = CA[("Caltech101", 16)]
    assert f"{mean(a):.2f} ± {pstd(a):.2f}" in out and f"{mean(a):.2f} ± {pstd(a):.2f} (n" not in out
    b = CA[("DescribableTextures", 16)]
    assert f"{mean(b):.2f} ± {pstd(b):.2f} (n=2)" in out  # n shown when it is not 3
    assert f"{ZS['Caltech101']:.2f} (n=1)" in out
    assert "missing (1/2)" in out  # CoOp's 1-shot average is not computed over one dataset
    assert "CoOp (rn50, nctx16_cscFalse_ctpend)" in out  # variant from the opts, like the folder name
    assert "rn50_ep50" not in out  # CoOp's 1-shot schedule config is the same row
    assert out.count("Few-shot top-1 accuracy") == 2  # one table per shot count: 1 and 16
    assert "Base-to-novel" in out


def test_base2new_hm_of_seed_means_and_average(tree):
    rows = csv_rows(tree)
    b = {(r["dataset"], r["metric"]): r for r in rows if r["table"] == "base2new" and r["trainer"] == "CLIP_Adapter"}
    means = {}
    for ds in ("Caltech101", "DescribableTextures"):
        base, new = mean(B2N[(ds, "base")]), mean(B2N[(ds, "new")])
        means[ds] = (base, new)
        assert float(b[(ds, "base")]["mean"]) == pytest.approx(base, abs=1e-4)  # test_base wins over train_base
        assert float(b[(ds, "base")]["std"]) == pytest.approx(pstd(B2N[(ds, "base")]), abs=1e-4)
        assert float(b[(ds, "new")]["mean"]) == pytest.approx(new, abs=1e-4)
        assert float(b[(ds, "hm")]["mean"]) == pytest.approx(hm(base, new), abs=1e-4)
    ab = mean([m[0] for m in means.values()])
    an = mean([m[1] for m in means.values()])
    assert float(b[("Average", "hm")]["mean"]) == pytest.approx(hm(ab, an), abs=1e-4)
    rc, out, _ = run_cli(tree)
    base, new = means["Caltech101"]
    assert f"| {hm(base, new):.2f} |" in out


def test_published_columns_and_difference(tree):
    rows = csv_rows(tree, "--published")
    r = next(x for x in rows if x["trainer"] == "CLIP_Adapter" and x["dataset"] == "Caltech101" and x["shots"] == "16" and x["table"] == "fewshot")
    assert float(r["published"]) == 92.49  # Tip-Adapter exp.log, CLIP-Adapter RN50 Caltech101 16 shots
    assert float(r["delta"]) == pytest.approx(mean(CA[("Caltech101", 16)]) - 92.49, abs=1e-4)
    assert r["published_source"] == "tip_adapter_exp_log"
    z = next(x for x in rows if x["trainer"] == "ZeroshotCLIP" and x["dataset"] == "DescribableTextures" and x["shots"] == "1")
    assert float(z["published"]) == 42.2
    rc, out, err = run_cli(tree, "--published")
    assert rc == 0, err
    assert "Published vs ours, 16 shots" in out and f"{mean(CA[('Caltech101', 16)]) - 92.49:+.2f}" in out


def test_secondary_sources_are_labelled(tmp_path):
    root = tmp_path / "out"
    for seed, acc in enumerate([62.0, 63.0, 64.0], 1):
        write_run(root, f"imagenet/CoOp/rn50_16shots/seed{seed}", trainer="CoOp", dataset="ImageNet", accuracy=acc, seed=seed)
    rc, out, err = run_cli(root, "--published")
    assert rc == 0, err
    assert "62.95" in out and "tip_adapter_paper_table2 (secondary)" in out
    # a tiny/smoke run has no published counterpart: stated, not invented
    other = tmp_path / "smoke"
    write_run(other, "smoke/x/seed1", trainer="CLIP_Adapter", dataset="Smoke", accuracy=10.0, seed=1, backbone="tiny", config="tiny")
    rc, out, _ = run_cli(other, "--published")
    assert rc == 0 and "no published figures" in out


def test_published_file_carries_the_reference_figures():
    figures, sources = R.load_published()
    names = {"imagenet": "ImageNet", "sun397": "SUN397", "oxford_pets": "OxfordPets", "eurosat": "EuroSAT", "caltech101": "Caltech101",
             "dtd": "DescribableTextures", "fgvc": "FGVCAircraft", "food101": "Food101", "oxford_flowers": "OxfordFlowers",
             "ucf101": "UCF101", "stanford_cars": "StanfordCars"}
    # A sample of the per-dataset figures of the Tip-Adapter repository's exp.log (RN50, CoOp's splits),
    # copied here by hand from that file: the data file must carry them unchanged.
    expected = [
        ("imagenet", "ZeroshotCLIP", None, 60.32), ("imagenet", "TipAdapterF", 16, 65.51), ("imagenet", "CLIP_Adapter", 16, 63.59),
        ("sun397", "TipAdapter", 4, 64.15), ("oxford_pets", "CLIP_Adapter", 8, 87.65), ("eurosat", "CLIP_Adapter", 1, 61.4),
        ("eurosat", "TipAdapterF", 16, 84.54), ("caltech101", "TipAdapter", 16, 90.18), ("dtd", "TipAdapter", 8, 58.63),
        ("fgvc", "TipAdapterF", 2, 23.19), ("fgvc", "ZeroshotCLIP", None, 17.1),
    ]
    index = {(f["dataset"], f["method"], f["shots"]): f for f in figures if f["setting"] == "fewshot" and f["backbone"] == "RN50" and f["source"] == "tip_adapter_exp_log"}
    for dataset, method, shots, accuracy in expected:
        assert index[(names[dataset], method, shots)]["accuracy"] == accuracy, (dataset, method, shots)
    assert sources["tip_adapter_exp_log"]["secondary"] is False
    assert all(s["secondary"] for k, s in sources.items() if k.startswith("tip_adapter_paper"))


def test_variant_suffix_is_stable_and_coop_style():
    coop = ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"]
    assert V.variant_suffix(coop) == "nctx16_cscFalse_ctpend"  # CoOp's own folder name
    reordered = coop[2:] + coop[:2]
    assert V.variant_suffix(reordered) == V.variant_suffix(coop)
    assert V.variant_suffix(["TRAINER.CLIP_ADAPTER.RATIO", "0.6"]) == "ratio0.6"
    assert V.variant_suffix(["DATASET.NUM_SHOTS", "4", "FEATURES.CACHE_DIR", "/x"]) == ""  # script-set and neutral keys
    assert V.variant_suffix(["TRAINER.COOP.CTX_INIT", "a photo of a"]) == "ctxinita_photo_of_a"
    # same short name from two keys, or too long: a hash, still stable
    clash = ["TRAINER.COOP.PREC", "fp32", "TRAINER.COCOOP.PREC", "fp16"]
    h = V.variant_suffix(clash)
    assert h.startswith("opts-") and h == V.variant_suffix(clash[2:] + clash[:2])
    assert h != V.variant_suffix(["TRAINER.COOP.PREC", "fp16", "TRAINER.COCOOP.PREC", "fp32"])
    with pytest.raises(UserError, match="NUM_SHOTS"):
        V.variant_suffix(["DATASET.NUM_SHOTS", "4"], forbid_script_keys=True)
    with pytest.raises(UserError, match="odd number"):
        V.variant_suffix(["OPTIM.LR"])


def test_plot_writes_a_png_atomically(tree, tmp_path):
    png = tmp_path / "plots" / "curves.png"
    rc, _, err = run_cli(tree, "--plot", png, "--published")
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["curves.png"]  # no temporary leftovers


def test_formats_latex_and_plain(tree):
    rc, out, err = run_cli(tree, "--format", "latex")
    assert rc == 0, err
    assert "\\begin{tabular}" in out
    rc, out, _ = run_cli(tree, "--format", "plain")
    assert rc == 0 and "CLIP_Adapter (rn50)" in out


@pytest.mark.parametrize(
    "case,message",
    [("missing", "results folder not found"), ("empty", "no results.json found"), ("format", "unknown --format"), ("plot", "nothing to plot")],
)
def test_bad_input_one_line_error(tmp_path, case, message):
    root = tmp_path / "out"
    args = [root]
    if case != "missing":
        root.mkdir()
    if case == "format":
        write_run(root, "a/seed1", trainer="CoOp", dataset="Caltech101", accuracy=50.0, seed=1)
        args += ["--format", "nonsense"]
    if case == "plot":
        write_run(root, "zs/seed1", trainer="ZeroshotCLIP", dataset="Caltech101", accuracy=50.0, seed=1, epochs=0)
        args += ["--plot", tmp_path / "x.png"]
    rc, out, err = run_cli(*args)
    assert rc == 2
    assert err.strip().startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_broken_results_file_is_skipped_with_a_warning(tree):
    bad = tree / "Caltech101" / "CoOp" / "broken" / "seed1"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text("{not json")
    nokey = tree / "Caltech101" / "CoOp" / "nokey" / "seed1"
    nokey.mkdir(parents=True)
    (nokey / "results.json").write_text(json.dumps({"trainer": "CoOp"}))
    rc, out, err = run_cli(tree)
    assert rc == 0
    assert str(bad / "results.json") in err and "missing key(s)" in err
    a = CA[("Caltech101", 16)]
    assert f"{mean(a):.2f} ± {pstd(a):.2f}" in out


def test_broken_published_file_names_itself(tree, tmp_path):
    pub = tmp_path / "pub.json"
    pub.write_text(json.dumps({"sources": {}, "figures": [{"setting": "fewshot", "dataset": "X", "method": "Y", "backbone": "RN50", "accuracy": 1, "source": "nope"}]}))
    rc, _, err = run_cli(tree, "--published", "--published-file", pub)
    assert rc == 2 and str(pub) in err and "unknown source 'nope'" in err


def test_duplicate_seed_runs_that_disagree_are_reported(tmp_path):
    root = tmp_path / "out"
    write_run(root, "a/seed1", trainer="CoOp", dataset="Caltech101", accuracy=50.0, seed=1)
    write_run(root, "b/seed1", trainer="CoOp", dataset="Caltech101", accuracy=60.0, seed=1)
    rc, out, err = run_cli(root)
    assert rc == 0 and "disagree" in err and "50.00 (n=1)" in out


def test_results_does_not_import_torch_or_the_engine():
    code = "import sys, clip_adapter.app.results; bad = [m for m in sys.modules if m == 'torch' or m.startswith(('clip_adapter.engine', 'clip_adapter.trainers'))]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_dassl_engine_runs_are_their_own_row(tmp_path):
    import json as _json

    from clip_adapter.app.results import load_runs

    for engine, acc in (("own", 50.0), ("dassl", 70.0)):
        d = tmp_path / engine / "seed1"
        d.mkdir(parents=True)
        rec = {"format": 1, "trainer": "CLIP_Adapter", "dataset": "Smoke", "config": "tiny", "backbone": "tiny", "shots": 4,
               "seed": 1, "subsample": "all", "accuracy": acc, "engine": engine}
        (d / "results.json").write_text(_json.dumps(rec))
    runs, problems = load_runs(str(tmp_path))
    assert not problems
    variants = sorted(r.method.variant for r in runs)
    assert variants == ["", "engine=dassl"]
