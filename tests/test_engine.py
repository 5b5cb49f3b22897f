"""Engine pieces that need no model: learning-rate schedule, precision choice, metrics, atomic writes."""
import os

import pytest
import torch

from clip_adapter.config import setup_cfg
from clip_adapter.engine.evaluator import MetricStream, classification_metrics
from clip_adapter.engine.optim import lr_at_epoch
from clip_adapter.utils import atomic_write_json, resolve_precision


def test_cosine_with_constant_warmup_matches_torch_after_warmup():
    cfg = setup_cfg(opts=["OPTIM.LR", "0.002", "OPTIM.MAX_EPOCH", "10", "OPTIM.LR_SCHEDULER", "cosine",
                          "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant", "OPTIM.WARMUP_CONS_LR", "1e-5"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.002)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    expected = [1e-5]  # warm-up epoch, then the cosine restarts its count (Dassl's WARMUP_RECOUNT)
    for _ in range(9):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    got = [lr_at_epoch(e, cfg.OPTIM) for e in range(10)]
    assert got == pytest.approx(expected, rel=1e-9)


def test_single_step_and_linear_warmup():
    cfg = setup_cfg(opts=["OPTIM.LR", "1.0", "OPTIM.LR_SCHEDULER", "single_step", "OPTIM.STEPSIZE", "(2,)", "OPTIM.GAMMA", "0.1",
                          "OPTIM.WARMUP_EPOCH", "2", "OPTIM.WARMUP_TYPE", "linear", "OPTIM.WARMUP_MIN_LR", "0.01"])
    assert [lr_at_epoch(e, cfg.OPTIM) for e in range(6)] == pytest.approx([0.01, 0.5, 1.0, 1.0, 0.1, 0.1])


def test_fp16_falls_back_to_fp32_off_cuda():
    assert resolve_precision("fp16", torch.device("cpu")) == "fp32"
    assert resolve_precision("amp", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"


def test_metrics():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1])
    m = classification_metrics(logits, labels, ["a", "b"], per_class=True)
    assert m["accuracy"] == 50.0 and m["correct"] == 2
    # class a: tp=1 fp=2 fn=0 -> f1 0.5; class b: tp=1 fp=0 fn=2 -> f1 0.5
    assert m["macro_f1"] == pytest.approx(50.0)
    assert m["per_class_accuracy"] == {"a": 100.0, "b": pytest.approx(100 / 3)}


@pytest.mark.parametrize("chunk", [1, 7, 100, 1037])
def test_streamed_metrics_equal_the_whole_matrix(chunk):
    """Chunk by chunk through a confusion matrix = the whole logits matrix at once, and = sklearn's
    accuracy and macro-F1 over the classes present in the labels (some classes never occur as labels,
    some are never predicted)."""
    from sklearn.metrics import accuracy_score, f1_score

    g = torch.Generator().manual_seed(0)
    n, c = 1037, 13
    labels = torch.randint(0, 10, (n,), generator=g)  # classes 10..12: predicted now and then, never labels
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), labels] += 1.5 * torch.rand(n, generator=g)  # a better-than-chance classifier
    logits[:, 3] -= 10.0  # class 3 is never predicted
    names = [f"class{i}" for i in range(c)]
    whole = classification_metrics(logits, labels, names, per_class=True)
    stream = MetricStream(c)
    for start in range(0, n, chunk):
        stream.update(logits[start : start + chunk], labels[start : start + chunk])
    assert stream.result(names, per_class=True) == whole
    pred, gt = logits.argmax(1).numpy(), labels.numpy()
    assert whole["accuracy"] == pytest.approx(100 * accuracy_score(gt, pred), abs=1e-12)
    assert whole["macro_f1"] == pytest.approx(100 * f1_score(gt, pred, labels=list(range(10)), average="macro", zero_division=0), abs=1e-12)
    assert list(whole["per_class_accuracy"]) == names[:10]
    assert whole["per_class_accuracy"]["class3"] == 0.0 and whole["total"] == n


def test_metrics_of_nothing_and_of_mismatched_rows():
    m = MetricStream(4).result()
    assert (m["total"], m["accuracy"], m["macro_f1"]) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="3 rows of logits for 2 labels"):
        MetricStream(4).update(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(TypeError):
        atomic_write_json(str(target), {"x": object()})
    assert not target.exists() and os.listdir(tmp_path) == []


def test_subnormal_sweeps_every_64_steps_and_after_the_last_epoch():
    from clip_adapter.engine.denormals import SWEEP_STEPS, subnormal_sweep_due, zero_subnormals

    assert SWEEP_STEPS == 64
    assert [e for e in range(200) if subnormal_sweep_due(e, 1, 200)] == [63, 127, 191, 199]  # few-shot: one step an epoch
    assert all(subnormal_sweep_due(e, 500, 200) for e in range(200))  # ImageNet-size: every epoch
    assert [e for e in range(10) if subnormal_sweep_due(e, 20, 10)] == [3, 6, 9]
    t = torch.tensor([1e-39, -1e-40, 0.0, 1e-37, -2.0])
    assert zero_subnormals([t, torch.arange(3)]) == 2 and t.tolist() == [0.0, 0.0, 0.0, pytest.approx(1e-37), -2.0]


def test_optimiser_is_built_on_first_use_and_checked_at_once():
    """Building a torch optimiser imports torch._dynamo (about a second): an evaluation-only run
    never builds one; a bad OPTIM.NAME still fails when the trainer is built."""
    from clip_adapter.engine.optim import LazyOptimizer
    from clip_adapter.errors import ConfigError

    cfg = setup_cfg(opts=["OPTIM.NAME", "sgd", "OPTIM.LR", "0.1", "OPTIM.MOMENTUM", "0.9", "OPTIM.WEIGHT_DECAY", "0.0"])
    p = torch.nn.Parameter(torch.ones(3))
    opt = LazyOptimizer([p], cfg.OPTIM)
    assert not opt.built
    p.grad = torch.ones(3)
    opt.step()
    assert opt.built and torch.allclose(p.detach(), torch.full((3,), 0.9))
    assert opt.state_dict()["param_groups"][0]["momentum"] == 0.9 and len(opt.state) == 1
    with pytest.raises(ConfigError, match="OPTIM.NAME must be one of"):
        LazyOptimizer([p], setup_cfg(opts=["OPTIM.NAME", "sgdd"]).OPTIM)
    with pytest.raises(ValueError, match="nothing to optimise"):
        LazyOptimizer([torch.nn.Parameter(torch.ones(1), requires_grad=False)], cfg.OPTIM)


def test_evaluation_only_never_imports_the_compiler_stack(tmp_path, data_root):
    """A trained method evaluated from its checkpoint (a warm --eval-only run): neither torchvision
    nor torch._dynamo is imported; training afterwards works as usual."""
    import json
    import subprocess
    import sys

    from conftest import SMOKE_DS, trainer_cfg

    code = rf"""
import json, sys
from clip_adapter.plugins import load_all as register_all
from clip_adapter.config import setup_cfg
from clip_adapter.registry import TRAINERS
register_all()
cfg = setup_cfg({SMOKE_DS!r}, {trainer_cfg("CLIP_Adapter")!r}, {{"DATASET.ROOT": {data_root!r}, "OUTPUT_DIR": {str(tmp_path / "out")!r},
                "TRAINER.NAME": "CLIP_Adapter", "SEED": 1}}, ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
                "FEATURES.CACHE_DIR", {str(tmp_path / "cache")!r}])
trainer = TRAINERS.get("CLIP_Adapter")(cfg).build()
trainer.evaluate("test", quiet=True)
seen = {{m: m in sys.modules for m in ("torchvision", "torch._dynamo", "clip.clip")}}
trainer.train()
print(json.dumps(seen))
"""
    env = dict(os.environ, CLIP_ADAPTER_WEIGHTS=os.environ["CLIP_ADAPTER_WEIGHTS"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    # the first build fills the cache (decoding images imports torchvision); a second process reads it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torchvision": False, "torch._dynamo": False, "clip.clip": False}
