"""CLIP-Adapter: bottleneck adapters on CLIP's image and/or class-text features, residually blended.

For a raw feature f the adapted feature is ``alpha * A(f) + (1 - alpha) * f`` (``RATIO`` = alpha), then
L2-normalised; logits are ``logit_scale * norm(image) . norm(text)^T + logit_bias``. ``TYPE`` picks the branch:
``visual`` (the paper's default and the only one the authors released), ``text`` (on the fixed
prompt classifier) or ``both``. Only the adapters train; CLIP stays frozen and its image features
come from the shared cache. The adapter width is the backbone's embedding width, read from the
loaded model (1024 for RN50, 512 for RN101/ViT-B), never a constant.

The visual adapter is registered as ``clip_adapter`` with the same state-dict keys as the authors'
release, so their checkpoints load through ``--model-dir``/``MODEL.INIT_WEIGHTS``. Checkpoints
written here also store the alpha they were trained with (``blend_ratio``), so ``--eval-only``
evaluates the model as trained even when alpha came from the per-dataset table or a search.

alpha search (``SEARCH_RATIOS``): alpha is a *training* hyperparameter (the adapter learns to
compensate for the blend it is trained under), so one adapter is trained per value, from the same
initial weights and the same batch order, each in ``<out>/alpha_search/ratio_<alpha>/`` (resumable);
the one with the best accuracy on the split ``SELECTION.PROTOCOL`` names (engine/selection.py; the
few-shot val by default, first value on ties) is deployed, and every value tried is logged, written
to ``<out>/alpha_search.json`` (results.json's selection format) and recorded in results.json.
Under ``SELECTION.PROTOCOL none`` the grid is not searched: ``RATIO`` applies. On cached features
this costs seconds to minutes per value.

SigLIP (sigmoid-trained backbones): the adapters train with the paper's softmax cross-entropy over
the classes on the backbone's scale and bias (the bias, a constant per logit, cancels in the softmax),
i.e. CLIP-Adapter's objective on SigLIP features, not SigLIP's pairwise sigmoid loss.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.checkpoint import epoch_name
from clip_adapter.engine.selection import Search
from clip_adapter.errors import ConfigError
from clip_adapter.models.adapter import Adapter, residual_blend
from clip_adapter.registry import TRAINERS
from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.utils import atomic_write_json

log = logging.getLogger(__name__)

TYPES = ("visual", "text", "both")
VISUAL = "clip_adapter"  # module name of the authors' release (checkpoint folder and keys)
TEXT = "text_adapter"
RATIO_KEY = "blend_ratio"  # extra tensor stored with each adapter's weights
SEARCH_FILE = "alpha_search.json"
SEARCH_DIR = "alpha_search"
KNOB = "TRAINER.CLIP_ADAPTER.RATIO"


def _check_ratio(value: float, where: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must be an alpha in [0, 1], got {value}")
    return value


def resolve_ratio(cfg) -> Tuple[float, str]:
    """(alpha, where it came from): RATIO itself, or for RATIO < 0 the per-dataset RATIO_TABLE."""
    node = cfg.TRAINER.CLIP_ADAPTER
    if float(node.RATIO) >= 0:
        return _check_ratio(node.RATIO, "TRAINER.CLIP_ADAPTER.RATIO"), "TRAINER.CLIP_ADAPTER.RATIO"
    table = node.RATIO_TABLE
    name = cfg.DATASET.NAME
    for key in (name, "DEFAULT"):
        if key in table:
            where = f"TRAINER.CLIP_ADAPTER.RATIO_TABLE.{key}"
            return _check_ratio(table[key], where), where
    raise ConfigError(
        f"TRAINER.CLIP_ADAPTER.RATIO is {node.RATIO} (= take alpha from RATIO_TABLE) but RATIO_TABLE has no entry for "
        f"{name!r} and no DEFAULT; set TRAINER.CLIP_ADAPTER.RATIO to a value in [0, 1]"
    )


def search_grid(cfg) -> List[float]:
    grid: List[float] = []
    for value in cfg.TRAINER.CLIP_ADAPTER.SEARCH_RATIOS:
        value = _check_ratio(value, "every TRAINER.CLIP_ADAPTER.SEARCH_RATIOS value")
        if value not in grid:
            grid.append(value)
    return grid


@TRAINERS.register()
class CLIP_Adapter(ClipTrainer):  # noqa: N801 - the registered name CoOp-style scripts use
    """CLIP-Adapter over cached frozen features (TRAINER.CLIP_ADAPTER.{TYPE, RATIO, REDUCTION, PREC})."""

    prec_node = "CLIP_ADAPTER"
    step_threads = 1  # a step is a few small matrix products on cached features (see TrainerBase)

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # Which branch is adapted: visual (the paper's default, the authors' release) | text | both.
        node.TYPE = "visual"
        # Residual blend ratio alpha: adapted = alpha * A(f) + (1 - alpha) * f. < 0: from RATIO_TABLE.
        node.RATIO = 0.2
        # Bottleneck reduction of the adapter (width / REDUCTION hidden units).
        node.REDUCTION = 4
        node.PREC = "fp32"
        # Text classifier prompts: "" = the dataset's hand-crafted template, "ensemble" = ImageNet's seven,
        # "coop_ensemble" = those seven plus the dataset's own (CoOp's ZeroshotCLIP2; ImageNet: the seven).
        node.TEMPLATES = ""
        # Per-dataset alpha: used when RATIO < 0, looked up by DATASET.NAME (key DEFAULT for the rest).
        # The backbone YAMLs hold the table and its sources (configs/trainers/CLIP_Adapter/).
        node.RATIO_TABLE = CN(new_allowed=True)
        # Non-empty: train one adapter per alpha here, keep the best on the *validation* split.
        node.SEARCH_RATIOS = ()
        return {"TRAINER.CLIP_ADAPTER": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        """None: both adapters map a D-dim feature to a D-dim feature, whatever the classes (the text
        adapter acts on each class's prompt feature), so they transfer to any class names."""
        return None

    @classmethod
    def needs_own_engine(cls, cfg) -> Optional[str]:
        """The alpha search is this trainer's own ``train()`` (one adapter per value, chosen on val)."""
        if search_grid(cfg):
            return "TRAINER.CLIP_ADAPTER.SEARCH_RATIOS (the alpha search); leave it empty and set TRAINER.CLIP_ADAPTER.RATIO"
        return super().needs_own_engine(cfg)

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        node = self.cfg.TRAINER.CLIP_ADAPTER
        if node.TYPE not in TYPES:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.TYPE must be one of {', '.join(TYPES)}, got {node.TYPE!r}")
        self.template_mode = node.TEMPLATES or "single"
        self.ratio, source = resolve_ratio(self.cfg)
        self._pending_ratio: Optional[float] = None
        super().build_model()
        log.info("CLIP-Adapter: %s adapter(s), width %d, reduction %d, alpha %.3g (from %s)",
                 node.TYPE, self.clip_info.embed_dim, int(node.REDUCTION), self.ratio, source)
        # Where every alpha-search candidate starts: fresh weights, or MODEL.INIT_WEIGHTS.
        self._initial_state = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in self.trainable_modules().items()}

    def build_head(self) -> None:
        node = self.cfg.TRAINER.CLIP_ADAPTER
        width = int(self.clip_info.embed_dim)
        try:
            make = lambda: Adapter(width, int(node.REDUCTION)).to(self.device)  # noqa: E731
            self.visual_adapter = make() if node.TYPE in ("visual", "both") else None
            self.text_adapter = make() if node.TYPE in ("text", "both") else None
        except ValueError as exc:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION: {exc} (the backbone's width is {width})") from None
        if self.visual_adapter is not None:
            self.register_model(VISUAL, self.visual_adapter)
        if self.text_adapter is not None:
            self.register_model(TEXT, self.text_adapter)

    # --------------------------------------------------------------- logits
    def class_text_features(self) -> torch.Tensor:
        """[C, D] unit rows: the fixed prompt classifier, adapted when the text adapter is on."""
        if self.text_adapter is None or self.ratio == 0:
            return self.text_weights  # already unit rows; alpha = 0 is zero-shot CLIP bit for bit
        txt = residual_blend(self.text_adapter, self.text_weights, self.ratio)
        return txt / txt.norm(dim=-1, keepdim=True)

    def result_fields(self) -> dict:
        node = self.cfg.TRAINER.CLIP_ADAPTER
        return {"alpha": float(self.ratio), "adapter_type": node.TYPE, "reduction": int(node.REDUCTION)}

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        img = image_feats
        if self.visual_adapter is not None:
            img = residual_blend(self.visual_adapter, img, self.ratio)
        img = img / img.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ self.current_text_features().t() + self.logit_bias

    def forward_backward(self, batch) -> Dict[str, float]:
        if self.ratio == 0:  # the adapters are blended out: zero-shot CLIP, nothing can learn
            with torch.no_grad():
                feats, labels = batch
                return {"loss": float(F.cross_entropy(self.logits(feats), labels).item())}
        return super().forward_backward(batch)

    # ---------------------------------------------------------- checkpoints
    def state_dict_for_save(self, name: str, module: nn.Module) -> Dict[str, torch.Tensor]:
        state = dict(super().state_dict_for_save(name, module))
        state[RATIO_KEY] = torch.tensor(float(self.ratio), dtype=torch.float64)  # exact alpha
        return state

    def load_module_state(self, name: str, state: Dict[str, torch.Tensor], source: str) -> None:
        state = dict(state)
        saved = state.pop(RATIO_KEY, None)
        if saved is not None:
            self._pending_ratio = float(saved)
        super().load_module_state(name, state, source)

    def _apply_saved_ratio(self, source: str) -> None:
        saved, self._pending_ratio = self._pending_ratio, None
        if saved is None or getattr(self, "_initialising", False):
            return  # e.g. the authors' checkpoints: they carry no alpha, the configured one applies
        if abs(saved - self.ratio) > 1e-12:
            log.info("Using alpha %.3g stored with the weights in %s (the config says %.3g)", saved, source, self.ratio)
        self.ratio = saved

    def load_model(self, directory: str, epoch: Optional[int] = None, best: bool = False) -> int:
        loaded = super().load_model(directory, epoch=epoch, best=best)
        self._apply_saved_ratio(directory)
        return loaded

    def resume_if_possible(self, directory: str) -> bool:
        resumed = super().resume_if_possible(directory)
        self._apply_saved_ratio(directory)
        return resumed

    def init_weights(self, path: str) -> None:
        """MODEL.INIT_WEIGHTS gives starting weights only; the configured alpha still applies."""
        self._initialising = True
        try:
            super().init_weights(path)
        finally:
            self._initialising, self._pending_ratio = False, None

    # ----------------------------------------------------------- alpha search
    def train(self) -> None:
        grid = search_grid(self.cfg)
        max_epoch = int(self.cfg.OPTIM.MAX_EPOCH)
        if not grid or self.start_epoch >= max_epoch:
            super().train()
            return
        fix = "leave TRAINER.CLIP_ADAPTER.SEARCH_RATIOS empty and set TRAINER.CLIP_ADAPTER.RATIO"
        if self.selection_split("alpha", fix) is None:  # SELECTION.PROTOCOL none: the configured alpha
            log.info("SELECTION.PROTOCOL none: TRAINER.CLIP_ADAPTER.SEARCH_RATIOS is not searched; alpha %.3g", self.ratio)
            super().train()
            return
        main_out = self.output_dir
        record_path = os.path.join(main_out, SEARCH_FILE)
        done: Dict[str, float] = {}
        if os.path.isfile(record_path):  # values finished before an interruption
            with open(record_path, encoding="utf-8") as f:
                done = {f"{r['value']:g}": float(r["score"]) for r in json.load(f).get("tried", [])}

        def score(alpha: float, split: str) -> float:
            if f"{alpha:g}" in done:
                log.info("alpha %.3g: %s accuracy %.2f%% (done before)", alpha, split, done[f"{alpha:g}"])
                return done[f"{alpha:g}"]
            self._start_candidate(alpha, os.path.join(main_out, SEARCH_DIR, f"ratio_{alpha:g}"))
            super(CLIP_Adapter, self).train()
            done[f"{alpha:g}"] = acc = self.evaluate(split, quiet=True)["accuracy"]
            log.info("alpha search: alpha %.3g -> %s accuracy %.2f%%", alpha, split, acc)
            self._write_search(record_path, grid, done, None)
            return acc

        try:
            best = self.select(KNOB, grid, score, default=self.ratio, fix=fix)
        finally:
            self.output_dir = main_out
        # each candidate's own epoch choice (TEST.FINAL_MODEL best_val) stays in its folder
        self.searches = [s for s in self.searches if s.knob != "epoch"]
        self._write_search(record_path, grid, done, best)
        log.info("alpha search: deploying alpha %.3g; tried %s", best, ", ".join(f"{a:g}: {done[f'{a:g}']:.2f}%" for a in grid))
        self.load_model(os.path.join(main_out, SEARCH_DIR, f"ratio_{best:g}"))
        self.save_model(max_epoch - 1, epoch_name(max_epoch))
        self.start_epoch = max_epoch

    def _start_candidate(self, alpha: float, folder: str) -> None:
        """Same initial weights, fresh optimiser and schedule; resumes the candidate if it was cut short."""
        self.output_dir = folder
        for name, module in self.trainable_modules().items():
            module.load_state_dict(self._initial_state[name])
            self.register_model(name, module)  # a fresh optimiser
        self.start_epoch, self.best_val, self.history, self.epoch_scores = 0, -1.0, [], []
        self.ratio = alpha
        self.resume_if_possible(folder)
        self.ratio = alpha

    @staticmethod
    def _write_search(path: str, grid: List[float], done: Dict[str, float], best: Optional[float]) -> None:
        """The search so far, in results.json's selection format (it is also what a resumed search reads)."""
        found = Search(KNOB, tried=[(a, done[f"{a:g}"]) for a in grid if f"{a:g}" in done], chosen=best)
        atomic_write_json(path, found.record())
