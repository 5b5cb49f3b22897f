"""Distribution shift, cross-dataset transfer and ablations on the offline pair.

The scripts (xd_train.sh, xd_test.sh, ablation.sh) run as a user runs them, on the smoke dataset,
its shifted test-only variants and SmokeOther; the tables are checked against the results.json
files with the statistics computed here. Refusals and the class-subset mapping run the CLI in-process.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.config import setup_cfg
from clip_adapter.engine.transfer import Origin, label_map
from clip_adapter.features import decode_keys
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import set_random_seed
from conftest import REPO, trainer_cfg
from test_scripts import bash, markdown_rows, mean, pstd, results_under, script_env

import clip_adapter.datasets  # noqa: F401  (registers them)
import clip_adapter.trainers  # noqa: F401

DS = REPO / "configs" / "datasets"
SMOKE_CLASSES = ["apple", "boat", "cat", "daisy", "eagle", "fern", "guitar", "harbor", "igloo", "jellyfish"]


def dataset(name, data_root, shots=-1, seed=1):
    cfg = setup_cfg(str(DS / f"{name}.yaml"), "", {"DATASET.ROOT": data_root, "SEED": seed}, ["DATASET.NUM_SHOTS", str(shots)])
    return DATASETS.get(cfg.DATASET.NAME)(cfg)


def read(folder) -> dict:
    return json.loads((Path(folder) / "results.json").read_text())


def cell(values) -> str:
    return f"{mean(values):.2f} ± {pstd(values):.2f}" if len(values) > 1 else f"{mean(values):.2f} (n=1)"


# ------------------------------------------------------------------ datasets
def test_smoke_variants_are_smokes_test_images_rendered_differently(data_root):
    smoke = dataset("smoke", data_root)
    by_name = {Path(d.impath).name: d for d in smoke.test}
    gray, inverted, blur, subset = (dataset(n, data_root) for n in ("smoke_gray", "smoke_invert", "smoke_blur", "smoke_subset"))
    for variant in (gray, inverted, blur):
        assert variant.test_only and variant.classnames == SMOKE_CLASSES and len(variant.test) == len(smoke.test)
        assert variant.templates() == smoke.templates()
    first = inverted.test[0]
    original = np.asarray(Image.open(by_name[Path(first.impath).name].impath).convert("RGB"), dtype=int)
    assert (np.asarray(Image.open(first.impath), dtype=int) == 255 - original).all()
    pixels = np.asarray(Image.open(gray.test[0].impath).convert("RGB"))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    # a class subset, relabelled 0..4, each label mapped back to Smoke's by smoke_labels
    assert subset.classnames == [SMOKE_CLASSES[i] for i in subset.smoke_labels] and len(subset.classnames) == 5
    assert {d.label for d in subset.test} == set(range(5))
    assert all(smoke.classnames[subset.smoke_labels[d.label]] == d.classname for d in subset.test)
    other = dataset("smoke_other", data_root, shots=4)
    assert len(other.classnames) == len(SMOKE_CLASSES) and not set(other.classnames) & set(SMOKE_CLASSES)
    assert len(other.train_x) == 4 * len(other.classnames) and not other.test_only


class _Fake:
    def __init__(self, classnames, **attrs):
        self.classnames = classnames
        self.__dict__.update(attrs)


def test_label_map_explicit_labels_names_and_refusal():
    imagenet = Origin("ImageNet", ["tench", "missile", "goldfish", "missile", "shark"])
    # ImageNet-A style: the explicit map tells the two "missile" classes apart
    assert label_map(_Fake(["missile", "shark"], imagenet_labels=[3, 4]), imagenet) == [3, 4]
    # without it, a shared name is ambiguous: no map (a class-bound model is then refused)
    assert label_map(_Fake(["missile", "shark"]), imagenet) is None
    assert label_map(_Fake(["shark", "tench"]), imagenet) == [4, 0]  # unique names map by name
    assert label_map(_Fake(["shark", "owl"]), imagenet) is None  # a class the model never saw
    # an explicit map that disagrees with the names is not trusted; nor one for another class subset
    assert label_map(_Fake(["shark", "tench"], imagenet_labels=[0, 4]), imagenet) == [4, 0]
    base = Origin("ImageNet", ["tench", "missile"], subsample="base")
    assert label_map(_Fake(["missile"], imagenet_labels=[3]), base) == [1]


# ------------------------------------------------ transfer through the CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A linear probe and a class-specific CoOp trained on Smoke (in-process, a few seconds)."""
    from clip_adapter.app.train import main
    from conftest import SMOKE_DS

    out = tmp_path_factory.mktemp("xd") / "output"
    runs = {
        "LinearProbeCLIP": ["DATASET.NUM_SHOTS", "4"],
        "CoOp": ["DATASET.NUM_SHOTS", "2", "TRAINER.COOP.CSC", "True", "OPTIM.MAX_EPOCH", "1"],
    }
    for name, opts in runs.items():
        argv = ["--root", data_root, "--seed", "1", "--trainer", name, "--dataset-config-file", SMOKE_DS,
                "--config-file", trainer_cfg(name), "--output-dir", str(out / name), *opts]
        assert main(argv) == 0
    return out


def evaluate(run_train, out, trainer, model_dir, target, *opts):
    return run_train(out, trainer, *opts, dataset=str(DS / f"{target}.yaml"), extra=("--eval-only", "--model-dir", str(model_dir)))


@pytest.mark.parametrize("trainer,opts,reason", [
    ("LinearProbeCLIP", (), "its weights are one classifier row per training class"),
    ("CoOp", ("TRAINER.COOP.CSC", "True"), "learned per training class (TRAINER.COOP.CSC True"),
])
@pytest.mark.slow
def test_class_bound_model_on_other_classes_is_refused_in_one_line(trained, run_train, tmp_path, capsys, trainer, opts, reason):
    """SmokeOther has as many classes as Smoke: the shapes would load, the names say no."""
    out = tmp_path / "output" / "eval"
    assert evaluate(run_train, out, trainer, trained / trainer, "smoke_other", *opts) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {trainer} trained on Smoke") and reason in err[0]
    assert "SmokeOther's 10 classes, which are not among its 10 training classes" in err[0]
    assert not (out / "results.json").exists()
    assert not (tmp_path / "output" / "feature_cache").exists()  # refused before CLIP was loaded or anything encoded


def test_class_bound_model_on_a_mapped_subset_scores_only_those_columns(trained, run_train, data_root, tmp_path):
    out = tmp_path / "output" / "subset"
    assert evaluate(run_train, out, "LinearProbeCLIP", trained / "LinearProbeCLIP", "smoke_subset") == 0
    res = read(out)
    assert res["source"]["relation"] == "class subset" and res["source"]["mapped_to_source_classes"] is True
    assert res["source"]["dataset"] == "Smoke" and res["num_classes"] == 5 and res["test_only"] is True
    # independently: the saved 10-way head on SmokeSubset's features, restricted to Smoke's odd labels
    state = torch.load(trained / "LinearProbeCLIP" / "linear_probe" / "model.pth.tar-1", weights_only=True)
    assert state["trained_on"]["classnames"] == SMOKE_CLASSES
    cfg = setup_cfg(str(DS / "smoke_subset.yaml"), trainer_cfg("ZeroshotCLIP"),
                    {"DATASET.ROOT": data_root, "OUTPUT_DIR": str(tmp_path / "output" / "zs"), "TRAINER.NAME": "ZeroshotCLIP"}, [])
    set_random_seed(1)
    feats, labels = TRAINERS.get("ZeroshotCLIP")(cfg).build().split_features("test")
    logits = feats @ state["state_dict"]["weight"].t() + state["state_dict"]["bias"]
    pred = logits[:, [1, 3, 5, 7, 9]].argmax(dim=1)
    assert res["accuracy"] == pytest.approx(100.0 * (pred == labels).float().mean().item())
    # the same classes in other renderings load as they are
    gray = tmp_path / "output" / "gray"
    assert evaluate(run_train, gray, "LinearProbeCLIP", trained / "LinearProbeCLIP", "smoke_gray") == 0
    assert read(gray)["source"]["relation"] == "same classes" and read(gray)["source"]["mapped_to_source_classes"] is False


def test_source_is_recorded_and_must_agree(trained, run_train, tmp_path, capsys):
    out = tmp_path / "output" / "bad"
    rc = evaluate(run_train, out, "LinearProbeCLIP", trained / "LinearProbeCLIP", "smoke_gray", "EXPERIMENT.SOURCE", "ImageNet")
    assert rc == 2 and "EXPERIMENT.SOURCE is 'ImageNet' but the model" in capsys.readouterr().err


# ------------------------------------------------------- scripts, offline
SEEDS = [1, 2]
TARGETS = {"smoke_subset": "SmokeSubset", "smoke_other": "SmokeOther"}
RATIOS = ["0", "0.5"]


@pytest.fixture(scope="module")
def offline(tmp_path_factory, data_root):
    """xd_train/xd_test (CLIP-Adapter, zero-shot), ablation.sh and zero-shot, as a user runs them."""
    cwd = tmp_path_factory.mktemp("experiments")
    out = cwd / "output"
    env = script_env(data_root, out, SOURCE="smoke")
    steps = []
    for s in SEEDS:
        steps.append(("xd_train.sh", s, "CLIP_Adapter", "tiny"))
        steps += [("xd_test.sh", d, s, "CLIP_Adapter", "tiny") for d in TARGETS]
    steps.append(("xd_test.sh", "smoke_other", 1, "ZeroshotCLIP", "tiny"))
    steps.append(("ablation.sh", "smoke", "tiny", 4, "TRAINER.CLIP_ADAPTER.RATIO", ",".join(RATIOS)))
    steps.append(("zeroshot.sh", "smoke", "tiny"))
    for name, *args in steps:
        proc = bash(name, *args, env={**env, "SEEDS": " ".join(map(str, SEEDS))} if name == "ablation.sh" else env, cwd=cwd)
        assert proc.returncode == 0, f"{name} {args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    tables = subprocess.run([sys.executable, "-m", "clip_adapter.app.results", str(out), "--expected-seeds", "2", "--include-offline-checks",
                             "--plot-ablation", str(out / "ablation.png")], capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    return {"out": out, "found": results_under(out), "tables": tables.stdout}


@pytest.mark.slow
def test_folder_layout_is_cocoops(offline):
    found, out = offline["found"], offline["out"]
    expected = {"smoke/ZeroshotCLIP/tiny/seed1", "evaluation_from_smoke/ZeroshotCLIP/tiny_16shots/smoke_other/seed1"}
    expected |= {f"smoke/CLIP_Adapter/tiny_16shots/seed{s}" for s in SEEDS}
    expected |= {f"evaluation_from_smoke/CLIP_Adapter/tiny_16shots/{d}/seed{s}" for d in TARGETS for s in SEEDS}
    expected |= {f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio{r}/seed{s}" for r in RATIOS for s in SEEDS}
    assert set(found) == expected
    for d, name in TARGETS.items():
        for s in SEEDS:
            rec = found[f"evaluation_from_smoke/CLIP_Adapter/tiny_16shots/{d}/seed{s}"]
            assert rec["dataset"] == name and rec["eval_only"] and rec["source"]["dataset"] == "Smoke"
            assert rec["model_dir"] == str(out / f"smoke/CLIP_Adapter/tiny_16shots/seed{s}")
            assert rec["source"]["relation"] == ("class subset" if d == "smoke_subset" else "other classes")
    for r in RATIOS:
        rec = found[f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio{r}/seed1"]
        assert rec["sweep_key"] == "TRAINER.CLIP_ADAPTER.RATIO" and rec["shots"] == 4
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_transfer_tables_equal_the_results_files(offline):
    found, text = offline["found"], offline["tables"]
    source = [found[f"smoke/CLIP_Adapter/tiny_16shots/seed{s}"]["accuracy"] for s in SEEDS]
    zs = found["smoke/ZeroshotCLIP/tiny/seed1"]["accuracy"]
    for title, targets in (("Distribution shift: trained on Smoke", ["smoke_subset"]), ("Cross-dataset transfer: trained on Smoke", ["smoke_other"])):
        rows = {r[0]: r[1:] for r in markdown_rows(text, title)}
        per_target = [[found[f"evaluation_from_smoke/CLIP_Adapter/tiny_16shots/{d}/seed{s}"]["accuracy"] for s in SEEDS] for d in targets]
        assert rows["CLIP_Adapter (tiny)"] == [cell(source)] + [cell(v) for v in per_target] + [f"{mean([mean(v) for v in per_target]):.2f}"]
    xd = {r[0]: r[1:] for r in markdown_rows(text, "Cross-dataset transfer")}
    other_zs = found["evaluation_from_smoke/ZeroshotCLIP/tiny_16shots/smoke_other/seed1"]["accuracy"]
    assert xd["ZeroshotCLIP (tiny)"] == [cell([zs]), cell([other_zs]), f"{other_zs:.2f}"]
    # transfer targets never leak into the few-shot table, ablation runs neither
    fewshot = {r[0]: r[1:] for r in markdown_rows(text, "Few-shot top-1 accuracy (%), 16 shots")}
    assert fewshot == {"ZeroshotCLIP (tiny)": [cell([zs])], "CLIP_Adapter (tiny)": [cell(source)]}
    assert "4 shots" not in text.split("### Ablation")[0]


@pytest.mark.slow
def test_ablation_table_equals_the_results_files(offline):
    found, text = offline["found"], offline["tables"]
    rows = markdown_rows(text, "Ablation of TRAINER.CLIP_ADAPTER.RATIO: CLIP_Adapter (tiny), 4 shots")
    expected = [[r, cell([found[f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio{r}/seed{s}"]["accuracy"] for s in SEEDS])] for r in RATIOS]
    assert rows == expected


@pytest.mark.slow
def test_ratio_zero_reproduces_zero_shot_exactly(offline):
    found = offline["found"]
    zs = found["smoke/ZeroshotCLIP/tiny/seed1"]
    for s in SEEDS:
        r0 = found[f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio0/seed{s}"]
        for key in ("accuracy", "correct", "macro_f1", "per_class_accuracy"):
            assert r0[key] == zs[key], key


@pytest.mark.slow
def test_every_image_and_view_is_encoded_once(offline):
    """Summed over every run, the image-encoder passes equal the rows of the cache, and no row repeats:
    no (image, view) was ever encoded twice. The sweep's later values and zero-shot encode nothing."""
    found, out = offline["found"], offline["out"]
    rows = 0
    for folder in (out / "feature_cache").iterdir():
        if folder.name == "text" or not folder.is_dir():
            continue
        keys = [k for shard in folder.glob("shard-*.npz") for k in decode_keys(np.load(shard)["keys"])]
        assert len(keys) == len(set(keys)), folder
        rows += len(keys)
    assert rows > 0 and sum(rec["encoder_images"] for rec in found.values()) == rows
    for s in SEEDS:
        assert found[f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio0/seed{s}"]["encoder_images"] > 0
        assert found[f"ablation/smoke/CLIP_Adapter/tiny_4shots/ratio0.5/seed{s}"]["encoder_images"] == 0
    assert found["smoke/ZeroshotCLIP/tiny/seed1"]["encoder_images"] == 0  # Smoke's test set was cached by then


def test_scripts_fail_fast_on_bad_input(tmp_path, data_root, experiment):
    env = {"DATA": data_root, "OUTPUT": tmp_path / "output", "SOURCE": "smoke"}
    cases = [
        ("xd_test", ["smoke_other", "1", "CLIP_Adapter", "tiny"], "is not finished (no results.json): run 'SOURCE=smoke bash scripts/xd_train.sh 1 CLIP_Adapter tiny' first"),
        ("xd_test", ["smoke", "1", "CLIP_Adapter", "tiny"], "DATASET is the source"),
        ("ablation", ["smoke", "tiny", "4", "TRAINER.CLIP_ADAPTER.RATIOS", "0,1"], "unknown config key"),
        ("ablation", ["smoke", "tiny", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0,zero"], "type mismatch"),
        ("ablation", ["smoke", "tiny", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0,0.0"], "are the same setting"),
        ("ablation", ["smoke", "tiny", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0,,1"], "empty value"),
        ("ablation", ["smoke", "tiny", "4", "FEATURES.BATCH_SIZE", "8,16"], "does not change a run's numbers"),
        ("ablation", ["smoke", "tiny", "4", "TRAIN.RESUME_SAVE_SECONDS", "0,10"], "does not change a run's numbers"),
        ("ablation", ["smoke", "tiny", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0,1", "CLIP_Adapter", "TRAINER.CLIP_ADAPTER.RATIO", "0.5"],
         "both the swept KEY and one of the extra opts"),
    ]
    for name, args, message in cases:
        rc, out, err = experiment(name, *args, env=env)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (name, args, err)
    assert not (tmp_path / "output").exists()


# ----------------------------------------------- tables from written files
def write(root: Path, rel: str, *, source=None, test_only=False, sweep_key="", **kw) -> None:
    from test_results import write_run

    folder = write_run(root, rel, **kw)
    record = json.loads((folder / "results.json").read_text())
    record.update(source=source, test_only=test_only, sweep_key=sweep_key)
    (folder / "results.json").write_text(json.dumps(record))


IN_SOURCE = [63.1, 63.7, 64.2]
SHIFTED = {"ImageNetV2": [55.0, 55.9, 56.1], "ImageNetSketch": [35.2, 36.0, 35.5], "ImageNetA": [21.0, 22.5, 21.4], "ImageNetR": [60.0, 61.2, 60.7]}


def test_distribution_shift_table_with_published_figures(tmp_path):
    import clip_adapter.app.results as R

    root = tmp_path / "output"
    for s, acc in enumerate(IN_SOURCE, 1):
        write(root, f"imagenet/CLIP_Adapter/rn50_16shots/seed{s}", trainer="CLIP_Adapter", dataset="ImageNet", accuracy=acc, seed=s)
    for ds, accs in SHIFTED.items():
        for s, acc in enumerate(accs, 1):
            write(root, f"evaluation/CLIP_Adapter/rn50_16shots/{ds}/seed{s}", trainer="CLIP_Adapter", dataset=ds, accuracy=acc, seed=s,
                  eval_only=True, model_dir=f"imagenet/seed{s}", test_only=True, opts=[],
                  source={"dataset": "ImageNet", "shots": 16, "relation": "same classes"})
    write(root, "imagenet/ZeroshotCLIP/rn50/seed1", trainer="ZeroshotCLIP", dataset="ImageNet", accuracy=60.3, seed=1, epochs=0, eval_only=True, opts=[])
    write(root, "evaluation/ZeroshotCLIP/rn50_16shots/ImageNetV2/seed1", trainer="ZeroshotCLIP", dataset="ImageNetV2", accuracy=53.0, seed=1,
          epochs=0, eval_only=True, test_only=True, opts=["EXPERIMENT.SOURCE", "ImageNet"], source={"dataset": "ImageNet", "relation": ""})
    runs, problems = R.load_runs(str(root))
    text, _ = R.render_tables(runs, "github", published=True)
    rows = {r[0]: r[1:] for r in markdown_rows(text, "Distribution shift: trained on ImageNet (16 shots)")}
    targets = list(SHIFTED)
    assert rows["CLIP_Adapter (rn50)"] == [cell(IN_SOURCE)] + [cell(SHIFTED[d]) for d in targets] + [f"{mean([mean(SHIFTED[d]) for d in targets]):.2f}"]
    assert rows["ZeroshotCLIP (rn50)"] == ["60.30 (n=1)", "53.00 (n=1)", "missing", "missing", "missing", "missing (1/4)"]
    published = {(r[0], r[1]): r[2:] for r in markdown_rows(text, "Published vs ours, distribution shift from ImageNet")}
    ours = mean(SHIFTED["ImageNetV2"])
    assert published[("CLIP_Adapter (rn50)", "ImageNetV2")] == [cell(SHIFTED["ImageNetV2"]), "55.69", f"{ours - 55.69:+.2f}", "tip_adapter_paper_table5 (secondary)"]
    assert published[("CLIP_Adapter (rn50)", "ImageNet (source)")][1] == "63.59"
    assert published[("ZeroshotCLIP (rn50)", "ImageNetV2")][1:3] == ["53.27", f"{53.0 - 53.27:+.2f}"]
    assert ("CLIP_Adapter (rn50)", "ImageNetA") not in published  # no published -A/-R figure exists
    assert "[secondary]" in text
    # the targets and transfer runs stay out of the few-shot tables
    assert [r[0] for r in markdown_rows(text, "Few-shot top-1 accuracy (%), 16 shots")] == ["ZeroshotCLIP (rn50)", "CLIP_Adapter (rn50)"]
    assert "ImageNetV2" not in text.split("### Distribution shift")[0]


def test_ablation_rows_are_values_in_order_and_equal_spellings_merge(tmp_path):
    import clip_adapter.app.results as R

    root = tmp_path / "output"
    key = "TRAINER.CLIP_ADAPTER.TYPE"
    accs = {"both": [70.0, 71.0], "visual": [72.0, 74.5], "text": [69.0, 68.0]}
    for v, values in accs.items():
        for ds, shift in (("DescribableTextures", 0.0), ("EuroSAT", 10.0)):
            for s, acc in enumerate(values, 1):
                write(root, f"ablation/{ds}/CLIP_Adapter/rn50_16shots/type{v}/seed{s}", trainer="CLIP_Adapter", dataset=ds, accuracy=acc + shift,
                      seed=s, sweep_key=key, opts=["DATASET.NUM_SHOTS", "16", key, v, "EXPERIMENT.SWEEP_KEY", key])
    ratio = "TRAINER.CLIP_ADAPTER.RATIO"
    for rel, value, s, acc in (("ratio0/seed1", "0", 1, 40.0), ("ratio0/seed2", "0", 2, 42.0), ("ratio0.0/seed3", "0.0", 3, 41.0),
                               ("ratio0.6/seed1", "0.6", 1, 50.0), ("ratio0.2/seed1", "0.2", 1, 45.0)):
        write(root, f"ablation/dtd/CLIP_Adapter/rn50_16shots/{rel}", trainer="CLIP_Adapter", dataset="DescribableTextures", accuracy=acc, seed=s,
              sweep_key=ratio, opts=["DATASET.NUM_SHOTS", "16", ratio, value, "EXPERIMENT.SWEEP_KEY", ratio])
    runs, _ = R.load_runs(str(root))
    text, _ = R.render_tables(runs, "github", expected_seeds=2)
    rows = markdown_rows(text, f"Ablation of {key}")
    assert [r[0] for r in rows] == ["visual", "text", "both"]
    for r in rows:
        dtd, euro = accs[r[0]], [a + 10.0 for a in accs[r[0]]]
        assert r[1:] == [cell(dtd), cell(euro), f"{(mean(dtd) + mean(euro)) / 2:.2f}"]
    rows = markdown_rows(text, f"Ablation of {ratio}")
    assert rows == [["0", f"{cell([40.0, 42.0, 41.0])} (n=3)"], ["0.2", "45.00 (n=1)"], ["0.6", "50.00 (n=1)"]]
    assert "Few-shot" not in text  # ablation runs are not few-shot results
    csv_text, _ = R.render_csv(runs)
    ablation = [r for r in csv_text.splitlines() if r.startswith("ablation,")]
    assert len(ablation) == 3 * 3 + 3  # TYPE: 3 values x (2 datasets + Average); RATIO: 3 values x 1 dataset
    png = tmp_path / "ablation.png"
    R.plot_ablation(runs, str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_ablation_without_ablation_runs_is_a_clear_error(tmp_path):
    write(tmp_path / "output", "x/seed1", trainer="CLIP_Adapter", dataset="Caltech101", accuracy=90.0, seed=1)
    rc = subprocess.run([sys.executable, "-m", "clip_adapter.app.results", str(tmp_path / "output"), "--plot-ablation", str(tmp_path / "a.png")],
                        capture_output=True, text=True)
    assert rc.returncode == 2 and "no ablation runs were found" in rc.stderr and not (tmp_path / "a.png").exists()
