"""The trainer base class: epochs, optimisation, checkpoints, resume, evaluation, results.json.

Subclasses register their trainable modules in ``build_model`` and implement ``train_batches``,
``forward_backward`` and ``predict_batches`` (logits chunk by chunk: evaluation streams them into a
confusion matrix); everything else (schedules, checkpoints in Dassl's layout, model selection on
val, the result files) is shared. Constructing a trainer does nothing heavy:
``build()`` reads data and loads models, so a trainer can be inspected without data on disk.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Dict, Iterable, Iterator, Optional, Tuple, Union

import torch
from torch import nn
from tqdm import tqdm

from clip_adapter.data.manager import DataManager
from clip_adapter.engine.checkpoint import BEST_NAME, epoch_name, find_model_file, latest_checkpoint, load_checkpoint, save_checkpoint
from clip_adapter.engine.denormals import flushed_denormals, subnormal_sweep_due, zero_subnormals
from clip_adapter.engine.evaluator import MetricStream, log_metrics
from clip_adapter.engine.optim import LazyOptimizer, lr_at_epoch, set_lr
from clip_adapter.engine.transfer import ORIGIN_KEY, ClassSpace, origin_record
from clip_adapter.errors import CheckpointError, ConfigError
from clip_adapter.utils import atomic_write_json, intra_op_threads, select_device

log = logging.getLogger(__name__)


class TrainerBase:
    """Shared loop. ``needs_training = False`` trainers (zero-shot) go straight to evaluation."""

    needs_training: bool = True
    #: intra-op threads for one training step on the CPU (0: torch's setting). 1 suits a step of many
    #: small operations (an adapter on cached features), see ``utils.intra_op_threads``.
    step_threads: int = 0

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        """Why this trainer's learned weights cannot classify other classes than they were trained on;
        None when they can (the class-dependent side is then rebuilt from the new class names).

        Consulted by ``--eval-only --model-dir`` on other classes (cross-dataset, base-to-novel;
        see ``engine/transfer.py``). Conservative: a trainer declares class independence by overriding.
        """
        if not cls.needs_training:
            return None  # nothing learned: the classifier is built for whichever classes are asked
        return "its learned weights are not declared independent of the classes they were trained on"

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.device = select_device(cfg.USE_CUDA)
        self.output_dir = cfg.OUTPUT_DIR
        self._modules: "OrderedDict[str, nn.Module]" = OrderedDict()
        self._optims: Dict[str, Optional[Union[LazyOptimizer, torch.optim.Optimizer]]] = {}
        self.start_epoch = 0
        self.epoch = 0
        self.best_val = -1.0
        self.dm: Optional[DataManager] = None
        self.history: list = []
        # Set before build_model() to evaluate a class-bound model on a mapped subset of its classes.
        self.class_space: Optional[ClassSpace] = None

    # --------------------------------------------------------------- build
    def build(self) -> "TrainerBase":
        self.build_data()
        self.build_model()
        return self

    def build_data(self) -> None:
        self.dm = DataManager(self.cfg)

    def build_model(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def register_model(self, name: str, module: nn.Module, trainable: bool = True) -> None:
        """Track a module for checkpoints; trainable ones get an optimiser from OPTIM.* (built on first use)."""
        self._modules[name] = module
        self._optims[name] = LazyOptimizer(module.parameters(), self.cfg.OPTIM) if trainable else None

    def trainable_modules(self) -> Dict[str, nn.Module]:
        return {k: m for k, m in self._modules.items() if self._optims.get(k) is not None}

    # --------------------------------------------------------------- train
    def train_batches(self, epoch: int) -> Iterable:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_backward(self, batch) -> Dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, loss: torch.Tensor) -> None:
        for opt in self._optims.values():
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self._optims.values():
            if opt is not None:
                opt.step()

    def set_mode(self, train: bool) -> None:
        for name, module in self._modules.items():
            module.train(train and self._optims.get(name) is not None)

    def training_state(self) -> Iterator[torch.Tensor]:
        """The tensors that carry over from step to step: trainable weights and optimiser buffers."""
        for name, module in self.trainable_modules().items():
            yield from module.parameters()
            for state in self._optims[name].state.values():
                yield from (v for v in state.values() if torch.is_tensor(v))

    def train(self) -> None:
        """Run epochs [start_epoch, MAX_EPOCH), saving a resumable checkpoint after each (on the CPU
        without subnormal floats, see ``engine/denormals.py``)."""
        max_epoch = int(self.cfg.OPTIM.MAX_EPOCH)
        if not self.needs_training or not self.trainable_modules():
            return
        if self.start_epoch >= max_epoch:
            log.info("All %d epochs already done", max_epoch)
            return
        if self.cfg.TEST.FINAL_MODEL == "best_val" and getattr(self.dm.dataset, "val_is_test", False):
            raise ConfigError(
                f"TEST.FINAL_MODEL best_val would choose the model on the test set: {self.cfg.DATASET.NAME}'s val split "
                "is its test split (as in CoOp); use TEST.FINAL_MODEL last_step"
            )
        log.info("Training %s for epochs %d..%d", type(self).__name__, self.start_epoch + 1, max_epoch)
        t0 = time.time()
        bar = tqdm(range(self.start_epoch, max_epoch), desc="Epochs", unit="ep", disable=max_epoch - self.start_epoch < 3)
        for epoch in bar:
            self.epoch = epoch
            lr = lr_at_epoch(epoch, self.cfg.OPTIM)
            for opt in self._optims.values():
                if opt is not None:
                    set_lr(opt, lr)
            self.set_mode(True)
            losses, n = 0.0, 0
            for i, batch in enumerate(self.train_batches(epoch)):
                cpu = self.device.type == "cpu"
                with flushed_denormals(cpu), intra_op_threads(self.step_threads if cpu else 0):  # the step only, never the image encoder
                    out = self.forward_backward(batch)
                losses += out["loss"]
                n += 1
                if self.cfg.TRAIN.PRINT_FREQ > 0 and (i + 1) % self.cfg.TRAIN.PRINT_FREQ == 0:
                    log.debug("epoch [%d/%d] batch %d loss %.4f lr %.3e", epoch + 1, max_epoch, i + 1, out["loss"], lr)
            if self.device.type == "cpu" and subnormal_sweep_due(epoch, n, max_epoch):
                zero_subnormals(self.training_state())  # before after_epoch saves: a resumed run continues the same state
            mean_loss = losses / max(n, 1)
            self.history.append({"epoch": epoch + 1, "loss": mean_loss, "lr": lr})
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            if (epoch + 1) % max(1, self.cfg.TRAIN.PRINT_FREQ) == 0 or epoch + 1 == max_epoch or epoch == self.start_epoch:
                log.info("epoch [%d/%d] loss %.4f lr %.4e", epoch + 1, max_epoch, mean_loss, lr)
            self.after_epoch(epoch)
        self.train_time = time.time() - t0
        log.info("Finished training in %.1fs", self.train_time)
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            log.info("Deploying the model with the best validation accuracy (%.2f%%)", self.best_val)
            self.load_model(self.output_dir, epoch=None, best=True)

    def after_epoch(self, epoch: int) -> None:
        if self.cfg.TEST.FINAL_MODEL == "best_val" and len(self.dm.dataset.val) > 0:
            acc = self.evaluate("val", quiet=True)["accuracy"]
            if acc > self.best_val:
                self.best_val = acc
                self.save_model(epoch, BEST_NAME)
        now = time.monotonic()
        due = (
            epoch == self.start_epoch
            or self._kept_epoch_file(epoch_name(epoch + 1))
            or now - getattr(self, "_last_resume_save", 0.0) >= float(self.cfg.TRAIN.RESUME_SAVE_SECONDS)
        )
        if due:
            self.save_model(epoch, epoch_name(epoch + 1))
            self._last_resume_save = now

    # --------------------------------------------------------- checkpoints
    def _module_state(self, name: str, epoch: int) -> Dict:
        module = self._modules[name]
        state = {"state_dict": {k: v.detach().cpu() for k, v in self.state_dict_for_save(name, module).items()}, "epoch": epoch + 1}
        opt = self._optims.get(name)
        if opt is not None:
            state["optimizer"] = opt.state_dict()
        state["best_val"] = float(self.best_val)
        state[ORIGIN_KEY] = origin_record(self.cfg, self.dm.dataset.classnames)  # what transfer checks
        return state

    def state_dict_for_save(self, name: str, module: nn.Module) -> Dict[str, torch.Tensor]:
        """What is saved of a module: only trainable tensors, so a checkpoint never embeds CLIP."""
        return {k: v for k, v in module.state_dict().items()}

    def _kept_epoch_file(self, path: str) -> bool:
        """Epoch files that stay on disk: the final one and every TRAIN.CHECKPOINT_FREQ-th."""
        try:
            number = int(path.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return True
        freq = int(self.cfg.TRAIN.CHECKPOINT_FREQ)
        return number == int(self.cfg.OPTIM.MAX_EPOCH) or (freq > 0 and number % freq == 0)

    def save_model(self, epoch: int, filename: str) -> None:
        """Save every trainable module; older epoch files become one rolling resume point."""
        for name in self.trainable_modules():
            module_dir = os.path.join(self.output_dir, name)
            is_epoch_file = filename != BEST_NAME
            previous = latest_checkpoint(module_dir) if is_epoch_file else None
            save_checkpoint(self._module_state(name, epoch), module_dir, filename, update_pointer=is_epoch_file)
            if previous and os.path.basename(previous) != filename and not self._kept_epoch_file(previous):
                os.unlink(previous)

    def load_model(self, directory: str, epoch: Optional[int] = None, best: bool = False) -> int:
        """Load every trainable module's weights from a run folder (``--model-dir``)."""
        loaded_epoch = 0
        names = list(self.trainable_modules())
        if not names:
            return 0
        for name in names:
            path = os.path.join(directory, name, BEST_NAME) if best else find_model_file(directory, name, epoch)
            ckpt = load_checkpoint(path)
            self.load_module_state(name, ckpt["state_dict"], path)
            loaded_epoch = int(ckpt.get("epoch", 0))
            log.info("Loaded %s weights from %s (epoch %d)", name, path, loaded_epoch)
        return loaded_epoch

    def load_module_state(self, name: str, state: Dict[str, torch.Tensor], source: str) -> None:
        module = self._modules[name]
        try:
            module.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {source} does not fit {name} ({str(exc).splitlines()[0]}); was it trained with another backbone or config?") from None

    def resume_if_possible(self, directory: str) -> bool:
        """Continue a crashed run from its newest epoch checkpoint; False when there is none."""
        names = list(self.trainable_modules())
        if not names:
            return False
        paths = {n: latest_checkpoint(os.path.join(directory, n)) for n in names}
        if not all(paths.values()):
            return False
        for name, path in paths.items():
            ckpt = load_checkpoint(path)
            self.load_module_state(name, ckpt["state_dict"], path)
            opt = self._optims.get(name)
            if opt is not None and "optimizer" in ckpt:
                opt.load_state_dict(ckpt["optimizer"])
            self.start_epoch = int(ckpt.get("epoch", 0))
            self.best_val = float(ckpt.get("best_val", -1.0))
        log.info("Resuming from %s (epoch %d done)", directory, self.start_epoch)
        return True

    def init_weights(self, path: str) -> None:
        """MODEL.INIT_WEIGHTS: a checkpoint file of a module, or a run folder."""
        if os.path.isdir(path):
            self.load_model(path)
            return
        ckpt = load_checkpoint(path)
        for name in self.trainable_modules():
            self.load_module_state(name, ckpt["state_dict"], path)
        log.info("Initialised trainable weights from %s", path)

    def result_fields(self) -> Dict:
        """Hyperparameters chosen during the run (e.g. on val) that results.json should record."""
        return {}

    # ------------------------------------------------------------- evaluate
    def predict_batches(self, split: str) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover - abstract
        """(logits, labels) of a split chunk by chunk, in order (logits may stay on the device)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, C] on the CPU, labels) of a whole split; evaluation streams ``predict_batches`` instead."""
        self.set_mode(False)
        chunks = [(logits.float().cpu(), labels) for logits, labels in self.predict_batches(split)]
        if not chunks:
            return torch.empty(0, len(getattr(self, "classnames", self.dm.dataset.classnames))), torch.empty(0, dtype=torch.long)
        return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])

    @torch.no_grad()
    def score(self, split: str, per_class: bool = False) -> Dict:
        """A split's metrics, streamed: memory stays one chunk of logits whatever images x classes is."""
        self.set_mode(False)
        stream = MetricStream(len(self.dm.dataset.classnames))
        for logits, labels in self.predict_batches(split):
            if self.class_space is not None:  # scores over the training classes -> the mapped subset's
                logits = logits[:, self.class_space.columns]
            stream.update(logits, labels)
        return stream.result(self.dm.dataset.classnames, per_class)

    def evaluate(self, split: str = "test", quiet: bool = False) -> Dict:
        metrics = self.score(split, per_class=bool(self.cfg.TEST.PER_CLASS_RESULT) and not quiet)
        if not quiet:
            log.info("Evaluate on the *%s* set", split)
            log_metrics(metrics, split)
        return metrics

    def val_same_as_test(self) -> bool:
        """Whether val holds exactly the test split's images (ImageNet: CoOp's val is its test set)."""
        ds = self.dm.dataset
        return len(ds.val) == len(ds.test) and all(a.impath == b.impath and a.label == b.label for a, b in zip(ds.val, ds.test))

    def final_metrics(self, with_val: bool) -> Tuple[Dict, Optional[Dict]]:
        """The end of a run: test metrics (logged as Dassl prints them) and, with ``with_val``, val
        metrics (their accuracy logged). When val is the test split it is scored once and serves both."""
        shared = with_val and self.val_same_as_test()
        val = self.evaluate("val", quiet=True) if with_val and not shared else None
        test = self.score("test", per_class=bool(self.cfg.TEST.PER_CLASS_RESULT))
        if shared:
            val = {k: v for k, v in test.items() if k != "per_class_accuracy"}
        if val is not None:
            log.info("val accuracy: %.2f%%%s", val["accuracy"], " (val is the test split: scored once)" if shared else "")
        log.info("Evaluate on the *test* set")
        log_metrics(test, "test")
        return test, val
