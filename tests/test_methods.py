"""The frozen-feature methods (Tip-Adapter(-F), GDA, LP++, CLAP/ZS-LP, TaskRes) and the selection protocol.

Each method is checked against its reference formula written out here, in the reference's own terms
(hand-made tensors), then end to end on the offline pair. The selection protocol is checked for what
it promises: ``fewshot_val`` never reads test (poisoned test features change nothing), ``none`` runs
no search, ``test`` is recorded, a dataset without the split refuses.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clip_adapter.config import get_cfg_default
from clip_adapter.engine import selection
from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from conftest import REPO, spy_splits, trainer_cfg
from test_trainers import build, read_results

NEW_METHODS = ["TipAdapter", "TipAdapterF", "GDA", "LPpp", "CLAP", "ZSLP", "TaskRes"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One feature cache for this module's runs: each image view is encoded once (features are keyed by
    encoder, transform and view, so sharing changes no number; it only saves the encoding)."""
    return str(tmp_path_factory.mktemp("feature_cache"))


@pytest.fixture
def make(data_root, cache_dir):
    """build() of test_trainers.py on the shared feature cache."""
    return lambda name, out, *opts, **kw: build(name, data_root, out, "FEATURES.CACHE_DIR", cache_dir, *opts, **kw)


@pytest.fixture
def cli(run_train, cache_dir):
    """run_train on the shared feature cache."""
    return lambda out, name, *opts, **kw: run_train(out, name, "FEATURES.CACHE_DIR", cache_dir, *opts, **kw)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------- the search utility
def test_search_ties_and_records():
    scores = {1: 50.0, 2: 70.0, 3: 70.0, 4: 10.0}
    first = selection.search("k", [1, 2, 3, 4], scores.get, split="val", ties="first")
    last = selection.search("k", [1, 2, 3, 4], scores.get, split="val", ties="last")
    assert (first.chosen, last.chosen) == (2, 3)
    assert first.record() == {"knob": "k", "tried": [{"value": v, "score": s} for v, s in scores.items()], "chosen": 2}
    pair = selection.search("ab", [(0.1, 2), (0.2, 1)], lambda v: v[0], split="val")
    assert pair.record()["chosen"] == [0.2, 1] and json.dumps(pair.record())
    with pytest.raises(ConfigError, match="no candidate"):
        selection.search("k", [], scores.get)
    # Tip-Adapter's grid (utils.search_hp), written as the reference writes it
    assert selection.linear_grid(0.1, 12, 200) == [i * (12 - 0.1) / 200 + 0.1 for i in range(200)]


def test_protocol_key_is_checked(cli, tmp_path, capsys):
    assert get_cfg_default().SELECTION.PROTOCOL == "fewshot_val"
    assert cli(tmp_path / "bad", "GDA", "SELECTION.PROTOCOL", "val", shots=2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SELECTION.PROTOCOL must be one of fewshot_val, full_val, none, test" in err[0]


# ------------------------------------------------------------------------------ Tip-Adapter
def test_tip_adapter_matches_the_reference_formulas(make, tmp_path):
    from clip_adapter.trainers.tip_adapter import build_cache_keys

    t = make("TipAdapter", tmp_path / "tip")
    n, d, c = t.tip.keys.shape[0], t.clip_info.embed_dim, len(t.classnames)
    g = torch.Generator().manual_seed(0)
    views = torch.randn(3, n, d, generator=g) * 4
    # build_cache_model: raw features averaged over the augment epochs, then normalised
    ref_keys = torch.cat([v.unsqueeze(0) for v in views], dim=0).mean(dim=0)
    ref_keys /= ref_keys.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(build_cache_keys(views), ref_keys)
    labels = torch.randint(c, (n,), generator=g)
    t.tip.fill(ref_keys, labels, alpha=2.5, beta=5.5)
    feats = torch.randn(9, d, generator=g) * 3
    # run_tip_adapter: clip_logits + cache_logits * alpha, features normalised, keys [D, NK], values one-hot
    f = feats / feats.norm(dim=-1, keepdim=True)
    cache_keys, cache_values, clip_weights = ref_keys.t(), F.one_hot(labels, c).float(), t.text_weights.t()
    affinity = f @ cache_keys
    cache_logits = ((-1) * (5.5 - 5.5 * affinity)).exp() @ cache_values
    tip_logits = t.logit_scale * f @ clip_weights + cache_logits * 2.5
    with torch.no_grad():
        torch.testing.assert_close(t.logits(feats), tip_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_tip_adapter_search_scores_the_grid_in_the_references_order(make, tmp_path):
    t = make("TipAdapter", tmp_path / "tip")
    t.train()
    (search,) = t.selection_record()["searches"]
    s = t.settings
    betas = [i * (s["SEARCH_SCALE"][0] - 0.1) / s["SEARCH_STEP"][0] + 0.1 for i in range(s["SEARCH_STEP"][0])]
    alphas = [i * (s["SEARCH_SCALE"][1] - 0.1) / s["SEARCH_STEP"][1] + 0.1 for i in range(s["SEARCH_STEP"][1])]
    assert [(r["value"]["beta"], r["value"]["alpha"]) for r in search["tried"]] == [(b, a) for b in betas for a in alphas]
    feats, labels = t.split_features("val")
    f = unit(feats)
    keys, values = t.tip.keys.detach(), t.tip.values
    best_acc, best = 0.0, None
    for r in search["tried"][::7]:  # the reference's accuracy of a sample of the grid, written out
        beta, alpha = r["value"]["beta"], r["value"]["alpha"]
        logits = t.logit_scale * f @ t.text_weights.t() + alpha * ((-1) * (beta - beta * f @ keys.t())).exp() @ values
        assert r["score"] == pytest.approx(100.0 * float((logits.argmax(1) == labels).float().mean()))
    for r in search["tried"]:  # strict > from 0: the first best
        if r["score"] > best_acc:
            best_acc, best = r["score"], r["value"]
    assert search["chosen"] == best
    assert (float(t.tip.alpha), float(t.tip.beta)) == pytest.approx((best["alpha"], best["beta"]))


def test_tip_adapter_f_optimiser_and_per_iteration_cosine(make, tmp_path):
    t = make("TipAdapterF", tmp_path / "tipf", "OPTIM.MAX_EPOCH", "3", "DATALOADER.TRAIN_X.BATCH_SIZE", "16")
    opt = t.optimizer("tip_cache")
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["eps"] == 1e-4
    lrs = []
    original = opt.step

    def step(*a, **k):
        lrs.append(opt.param_groups[0]["lr"])
        return original(*a, **k)

    opt.step = step
    t.train()
    per_epoch, total = 40 // 16, 3 * (40 // 16)  # 4 shots x 10 classes, Dassl's drop_last
    base = float(t.cfg.OPTIM.LR)
    assert lrs == pytest.approx([base * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    assert len(lrs) == 3 * per_epoch
    keys = t.tip.keys.detach()
    assert not torch.allclose(unit(keys), keys, atol=1e-4), "the fine-tuned keys moved off the unit sphere"
    knobs = [s["knob"] for s in t.selection_record()["searches"]]
    assert knobs == ["epoch", "TRAINER.TIP_ADAPTER (BETA, ALPHA)"]


@pytest.mark.slow
def test_tip_adapter_evaluates_a_class_subset_with_another_cache_size(cli, tmp_path):
    """Transfer to a class subset (SmokeSubset): the cache keeps the size of the training set it was built on."""
    out = tmp_path / "src"
    assert cli(out, "TipAdapter", shots=2) == 0
    subset = str(REPO / "configs" / "datasets" / "smoke_subset.yaml")
    assert cli(tmp_path / "sub", "TipAdapter", dataset=subset, extra=["--eval-only", "--model-dir", str(out)]) == 0
    res = read_results(tmp_path / "sub")
    assert res["source"]["relation"] == "class subset" and res["total"] > 0


# ------------------------------------------------------------------------------------- GDA
def test_gda_matches_the_reference_closed_form(make, tmp_path):
    from clip_adapter.trainers.gda import gda_weights

    g = torch.Generator().manual_seed(0)
    c, d = 3, 6
    labels = torch.arange(c).repeat(7)
    vecs = unit(torch.randn(len(labels), d, generator=g, dtype=torch.float64) + labels[:, None].double())
    # main_few_shots.py run(), written as the reference writes it
    mus = torch.cat([vecs[labels == i].mean(dim=0, keepdim=True) for i in range(c)])
    center_vecs = torch.cat([vecs[labels == i] - mus[i].unsqueeze(0) for i in range(c)])
    cov_inv = center_vecs.shape[1] * torch.linalg.pinv(
        (center_vecs.shape[0] - 1) * center_vecs.T.cov() + center_vecs.T.cov().trace() * torch.eye(center_vecs.shape[1], dtype=torch.float64))
    ps = torch.ones(c, dtype=torch.float64) * 1.0 / c
    W = torch.einsum("nd, dc -> cn", mus, cov_inv)
    b = ps.log() - torch.einsum("nd, dc, nc -> n", mus, cov_inv, mus) / 2
    weight, bias = gda_weights(vecs, labels, c)
    torch.testing.assert_close(weight.t(), W)
    torch.testing.assert_close(bias, b)

    t = make("GDA", tmp_path / "gda", "SELECTION.PROTOCOL", "none")
    t.train()
    views = t.train_view_features()
    y = torch.tensor([x.label for x in t.dm.dataset.train_x])
    weight, bias = gda_weights(unit(views.reshape(-1, views.shape[-1])), y.repeat(views.shape[0]), len(t.classnames))
    torch.testing.assert_close(t.head.linear.weight, weight.float())
    feats = torch.randn(5, t.clip_info.embed_dim, generator=g)
    f = unit(feats)
    with torch.no_grad():  # 100 * f T + alpha * (f W + b), alpha = the configured 0.1
        expected = t.logit_scale * f @ t.text_weights.t() + 0.1 * (f @ weight.float().t() + bias.float())
        torch.testing.assert_close(t.logits(feats), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- LP++
def reference_lpp(feats, labels, text, shots, epochs, bias, val_feats=None, val_labels=None):
    """linear_probe_p2.py's forward() on given features, written out (fp32, no CUDA)."""
    n, d = feats.shape
    c = text.shape[0]
    one_hot = F.one_hot(labels, c).float()
    centroids = one_hot.t() @ feats  # compute_centroids: sums, its division commented out
    classifier = nn.Linear(d, c, bias=True)
    classifier.weight.data = centroids.clone()
    classifier.bias.data = bias.clone()
    w, _ = np.linalg.eigh((feats.T @ feats).double().numpy())
    lr_temp = (4 * n) / max(w)
    ftT = feats @ text.t()
    alpha_tilde = (one_hot[None] * ftT[None] / one_hot[None].sum(-2, keepdim=True)).sum(1)[0].double() * shots
    init_alpha = torch.mean(250 / shots * alpha_tilde)
    lr_alpha = n / (max(torch.sum(torch.pow(ftT, 2), dim=0)) * 4)
    alpha_vec = (init_alpha * torch.ones(1, c)).float().requires_grad_(True)
    optimizer = torch.optim.SGD(classifier.parameters(), float(lr_temp), momentum=0.9)
    best_acc, best_epoch = 0.0, 0
    for epoch in range(epochs):
        logits = classifier(feats) + torch.ones(n, 1) @ alpha_vec * (feats @ text.t())
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            alpha_vec.data -= lr_alpha * alpha_vec.grad.data
        if val_feats is not None:
            with torch.no_grad():
                lv = classifier(val_feats) + torch.ones(len(val_feats), 1) @ alpha_vec * (val_feats @ text.t())
                acc_val = float((lv.argmax(1) == val_labels).float().mean()) * 100.0
            if acc_val >= best_acc:
                best_acc, best_epoch = acc_val, epoch
    return classifier, alpha_vec.detach()[0], best_epoch + 1


@pytest.mark.slow
def test_lpp_matches_the_reference_updates(make, tmp_path):
    t = make("LPpp", tmp_path / "lpp", "SELECTION.PROTOCOL", "none", "TRAINER.LPPP.STEPS", "25")
    t.train()
    feats = unit(t.train_view_features()[0])
    labels = torch.tensor([x.label for x in t.dm.dataset.train_x])
    g = torch.Generator().manual_seed(1)  # the trainer's seeded nn.Linear-style bias init
    bias = (torch.rand(len(t.classnames), generator=g) * 2 - 1) / math.sqrt(feats.shape[1])
    vf, vl = t.split_features("val")
    ref, alpha, best_epoch = reference_lpp(feats, labels, t.text_weights, 4, 25, bias, unit(vf), vl)
    torch.testing.assert_close(t.head.linear.weight, ref.weight, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(t.head.linear.bias, ref.bias, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(t.head.alpha.detach(), alpha, rtol=2e-4, atol=2e-4)
    assert t.lpp_epoch == 25 and t.selection_record()["searches"] == []
    # the deployed epoch on the few-shot val: the last best, as the reference's >=
    v = make("LPpp", tmp_path / "lppv", "TRAINER.LPPP.STEPS", "25")
    v.train()
    (search,) = v.selection_record()["searches"]
    assert search["knob"] == "epoch" and len(search["tried"]) == 25 and search["chosen"] == best_epoch == v.lpp_epoch


# ------------------------------------------------------------------------------ CLAP / ZS-LP
def test_clap_penalty_multipliers_and_outer_step():
    from clip_adapter.trainers.clap import penalty, phr_outer_step, zero_shot_multipliers

    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    lam = zero_shot_multipliers(logits, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(lam, torch.tensor([(0.5 + 0.75) / 2, 0.75]))
    torch.testing.assert_close(zero_shot_multipliers(logits, torch.tensor([0, 0, 1]), 2, "corrected"), lam * 2 / lam.sum())
    w, t = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert float(penalty(w, t, torch.tensor([0.5, 2.0]), "l2")) == pytest.approx((0.5 * 4 + 2.0 * 1) / 2)
    new_lam, rho = phr_outer_step(w, t, torch.tensor([0.5, 2.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(new_lam, torch.tensor([0.5 + 1.0 * 4, 2.0]))
    torch.testing.assert_close(rho, torch.tensor([4.0, 1.0]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["CLAP", "ZSLP"])
def test_clap_loss_is_cross_entropy_plus_the_class_penalty(name, make, tmp_path):
    t = make(name, tmp_path / name)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, t.clip_info.embed_dim, generator=g)
    labels = torch.randint(len(t.classnames), (8,), generator=g)
    t.forward_backward((feats, labels))  # first step: multipliers from zero-shot, prototypes move
    w = t.proto.prototypes.detach().clone()
    lam, base = t.proto.multipliers.clone(), t.text_weights
    # forward_lp + zero_shot_constraint, written out
    ce = F.cross_entropy(unit(feats) @ unit(w).t() * t.logit_scale, labels)
    expected = ce + (torch.mean(lam * (w - base).pow(2).sum(-1)) if name == "CLAP" else 0.0)
    assert t.forward_backward((feats, labels))["loss"] == pytest.approx(float(expected), rel=1e-5)
    if name == "CLAP":
        pool, y = t.pool()
        zs = t.logit_scale * unit(pool) @ base.t()
        onehot = F.one_hot(y, len(t.classnames)).float()
        torch.testing.assert_close(lam, torch.diag(torch.softmax(zs, -1).t() @ onehot) / onehot.sum(0))
    # each epoch: len(train_loader_x) batches of the shuffled pool (40 images, batch 32: one)
    assert len(list(t.train_batches(0))) == 1 and len(t.pool()[1]) == 2 * 40


# --------------------------------------------------------------------------------- TaskRes
def test_taskres_classifier_is_base_plus_scaled_residual(make, tmp_path):
    from clip_adapter.trainers.taskres import resolve_scale

    t = make("TaskRes", tmp_path / "tr")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        t.residual.text_feature_residuals.copy_(torch.randn(t.residual.text_feature_residuals.shape, generator=g))
    feats = torch.randn(4, t.clip_info.embed_dim, generator=g)
    # TaskResLearner.forward: t + alpha * x; CustomCLIP.forward: normalise both, logit_scale * f t^T
    text_features = t.text_weights + 0.5 * t.residual.text_feature_residuals.detach()
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(t.class_text_features(), text_features)
        torch.testing.assert_close(t.logits(feats), t.logit_scale * unit(feats) @ text_features.t())
    cfg = get_cfg_default()
    cfg.merge_from_file(trainer_cfg("TaskRes", "rn50"))
    cfg.DATASET.NAME = "OxfordFlowers"
    assert resolve_scale(cfg) == (1.0, "TRAINER.TASKRES.SCALE_TABLE.OxfordFlowers")
    cfg.DATASET.NAME = "Caltech101"
    assert resolve_scale(cfg)[0] == 0.5


# ---------------------------------------------------------------------------- every method
def test_new_methods_are_registered_class_bound_and_configured():
    for name in NEW_METHODS:
        cls = TRAINERS.get(name)
        blocker = cls.transfer_blocker(get_cfg_default())
        assert isinstance(blocker, str) and blocker, f"{name} must say why it cannot score unseen classes"
        for cfg in ("tiny", "rn50", "rn101", "vit_b32", "vit_b16"):
            assert os.path.isfile(trainer_cfg(name, cfg)), f"configs/trainers/{name}/{cfg}.yaml"
        assert (cls.__doc__ or "") and (sys.modules[cls.__module__].__doc__ or "").count("Reference:") == 1


def test_class_bound_method_is_refused_on_other_classes(cli, tmp_path, capsys):
    out = tmp_path / "src"
    assert cli(out, "GDA", shots=2) == 0
    other = str(REPO / "configs" / "datasets" / "smoke_other.yaml")
    capsys.readouterr()
    assert cli(tmp_path / "xd", "GDA", dataset=other, extra=["--eval-only", "--model-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot classify" in err[0] and "one mean (row) per training class" in err[0]


# ------------------------------------------------------------------------ selection protocol
SEARCHERS = [("TipAdapter", ()), ("GDA", ()), ("LPpp", ()), ("TipAdapterF", ("OPTIM.MAX_EPOCH", "3")),
             ("CLIP_Adapter", ("TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.2, 0.6]", "OPTIM.MAX_EPOCH", "1"))]


@pytest.mark.slow
@pytest.mark.parametrize("name, opts", SEARCHERS, ids=[n for n, _ in SEARCHERS])
def test_fewshot_val_never_reads_the_test_split(name, opts, make, tmp_path, monkeypatch):
    """The same choice with the test features poisoned (NaN, labels shuffled), and no test read at all."""
    records = []
    for poison in (False, True):
        t = make(name, tmp_path / f"run{poison}", *opts)
        if poison:
            feats, labels = t.split_features("test")
            t._split_feats["test"] = (torch.full_like(feats, float("nan")), labels.flip(0))
        seen = spy_splits(t, monkeypatch)
        t.train()
        assert "test" not in seen and "val" in seen
        records.append(t.selection_record())
    assert records[0] == records[1] and records[0]["protocol"] == "fewshot_val" and records[0]["searches"]


NONE_CASES = [("TipAdapter", ()), ("GDA", ()), ("LPpp", ()), ("TipAdapterF", ("OPTIM.MAX_EPOCH", "2")),
              ("CLIP_Adapter", ("TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.2, 0.6]", "OPTIM.MAX_EPOCH", "2")), ("CLAP", ("OPTIM.MAX_EPOCH", "2"))]


@pytest.mark.parametrize("name, opts", NONE_CASES, ids=[n for n, _ in NONE_CASES])
def test_protocol_none_runs_no_search(name, opts, make, tmp_path, monkeypatch):
    t = make(name, tmp_path / "none", "SELECTION.PROTOCOL", "none", *opts)
    seen = spy_splits(t, monkeypatch)
    t.train()
    assert set(seen) <= {"train"}, seen
    assert t.selection_record() == {"protocol": "none", "searches": []}
    if name in ("TipAdapter", "TipAdapterF"):
        assert (float(t.tip.alpha), float(t.tip.beta)) == (t.settings["INIT_ALPHA"], t.settings["INIT_BETA"])
    if name == "GDA":
        assert float(t.head.alpha) == 0.1
    if name == "CLIP_Adapter":
        assert t.ratio == 0.2 and not (tmp_path / "none" / "alpha_search").exists()


def test_protocol_none_refuses_a_search_without_a_configured_value(make, tmp_path):
    t = make("LinearProbeCLIP", tmp_path / "lp", "SELECTION.PROTOCOL", "none")
    with pytest.raises(ConfigError, match="SELECTION.PROTOCOL none runs no search, but C has no configured value"):
        t.train()


def test_full_val_scores_on_the_whole_val_split(make, tmp_path, monkeypatch):
    t = make("GDA", tmp_path / "full", "SELECTION.PROTOCOL", "full_val")
    assert len(t.dm.dataset.val_full) == 60 > len(t.dm.dataset.val) == 40  # 6 per class vs min(4 shots, 4)
    seen = spy_splits(t, monkeypatch)
    t.train()
    assert "val_full" in seen and "val" not in seen and "test" not in seen


@pytest.mark.parametrize("protocol", ["fewshot_val", "full_val"])
def test_a_validation_protocol_refuses_a_val_split_that_is_the_test_set(protocol, make, tmp_path):
    for name in ("TipAdapter", "TipAdapterF"):
        t = make(name, tmp_path / name, "SELECTION.PROTOCOL", protocol)
        t.dm.dataset.val_is_test = True
        with pytest.raises(ConfigError, match="validation split is its test set") as info:
            t.train()
        assert "\n" not in str(info.value) and "SELECTION.PROTOCOL none" in str(info.value)


def test_protocol_test_is_recorded_and_logged(cli, tmp_path):
    out = tmp_path / "t"
    assert cli(out, "GDA", "SELECTION.PROTOCOL", "test", shots=2) == 0
    res = read_results(out)
    assert res["selection"]["protocol"] == "test"
    (search,) = res["selection"]["searches"]
    assert search["knob"] == "TRAINER.GDA.ALPHA" and len(search["tried"]) == 7
    assert max(r["score"] for r in search["tried"]) == res["accuracy"]  # chosen on test: the best test accuracy
    assert "ON THE TEST SET" in (out / "log.txt").read_text()


# ------------------------------------------------------------- scripts/main.sh, three seeds
@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_METHODS)
def test_main_sh_smoke_three_seeds(name, tmp_path, data_root):
    env = dict(os.environ, DATA=data_root, OUTPUT=str(tmp_path / "output"), PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    for key in ("CLIP_ADAPTER_FEATURE_CACHE", "SEEDS", "DRY_RUN"):
        env.pop(key, None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "main.sh"), "smoke", "tiny", "4", name], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for seed in (1, 2, 3):
        res = read_results(tmp_path / "output" / "smoke" / name / "tiny_4shots" / f"seed{seed}")
        assert res["trainer"] == name and res["seed"] == seed and res["shots"] == 4 and 0 <= res["accuracy"] <= 100
        assert res["selection"]["protocol"] == "fewshot_val"
