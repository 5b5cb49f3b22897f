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
import signal
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from clip_adapter.data.manager import DataManager
from clip_adapter.engine.checkpoint import BEST_NAME, epoch_name, find_model_file, latest_checkpoint, load_checkpoint, save_checkpoint
from clip_adapter.engine import selection
from clip_adapter.engine.denormals import flushed_denormals, subnormal_sweep_due, zero_subnormals
from clip_adapter.engine.evaluator import MetricStream, log_metrics
from clip_adapter.engine.optim import LazyOptimizer, lr_at_epoch, set_lr
from clip_adapter.engine.transfer import ORIGIN_KEY, ClassSpace, origin_record
from clip_adapter.errors import CheckpointError, ConfigError
from clip_adapter.progress import progress
from clip_adapter.utils import atomic_write_json, intra_op_threads, select_device

if TYPE_CHECKING:
    from yacs.config import CfgNode as CN

log = logging.getLogger(__name__)


#: Fault injection for the kill-and-resume tests: ``<epoch>`` kills the process (SIGKILL) right after
#: that epoch's resume point is written, ``<epoch>:INT`` sends SIGINT to its process group instead
#: (what Ctrl-C in a terminal does). A deterministic moment instead of a race against sleeps.
FAULT_ENV = "CLIP_ADAPTER_FAULT_AFTER_EPOCH"


def inject_fault(trainer: "TrainerBase", epoch: int) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    at, _, how = spec.partition(":")
    if int(at) != epoch + 1:
        return
    trainer.save_model(epoch, epoch_name(epoch + 1))  # the resume point the test expects
    log.info("%s=%s: injected fault after epoch %d", FAULT_ENV, spec, epoch + 1)
    if how.upper() == "INT":
        os.killpg(os.getpgid(0), signal.SIGINT)
        time.sleep(5)  # the signal arrives asynchronously; never go on training past the fault
    else:
        os.kill(os.getpid(), signal.SIGKILL)


class TrainerBase:
    """Shared loop. The class attributes and classmethods below are the public trainer contract
    (docs/contributing.md): the scripts, tables, sweeps and the Dassl plugin learn everything they
    need about a method from them, through the registry."""

    #: What the method consumes: "features" (frozen image features, served by the feature cache) or
    #: "images" (its gradient passes through an encoder, so it trains on freshly augmented images).
    input_kind: str = "features"
    #: True: an optimiser loop over OPTIM.MAX_EPOCH epochs. False: fitted in one step (a closed form,
    #: a solver) or nothing to fit.
    trains_in_epochs: bool = True
    #: True: the number depends on the few-shot training data (shots and seed); False: training-free
    #: (zero-shot), one evaluation per dataset is enough and there is no checkpoint.
    uses_training_data: bool = True
    #: The backbone families (``clip_adapter.backbones``) the method is written for; empty: every family.
    backbone_families: tuple = ()

    @classmethod
    def config_defaults(cls) -> Dict[str, "CN"]:
        """{dotted path: node of defaults} this trainer reads (``{"TRAINER.COOP": CN(...)}``); added to
        the defaults when the class registers, and by ``clip_adapter.dassl.extend_cfg``."""
        return {}

    #: intra-op threads for one training step on the CPU (0: torch's setting). 1 suits a step of many
    #: small operations (an adapter on cached features), see ``utils.intra_op_threads``.
    step_threads: int = 0

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        """Why this trainer's learned weights cannot classify other classes than they were trained on;
        None when they can (the class-dependent side is then rebuilt from the new class names).

        Consulted by ``--eval-only --model-dir`` on other classes (cross-dataset, base-to-novel;
        see ``engine/transfer.py``) and by the experiment planner. Conservative: a trainer declares
        class independence by overriding.
        """
        if not cls.uses_training_data:
            return None  # nothing learned: the classifier is built for whichever classes are asked
        return "its learned weights are not declared independent of the classes they were trained on"

    #: Config keys whose values the few-shot experiments spell out in the run folder's name, CoOp
    #: style (``nctx16_cscFalse_ctpend``), set to this trainer's defaults unless given.
    folder_keys: Tuple[str, ...] = ()

    @classmethod
    def schedule_configs(cls, cfg_name: str, dataset: str, shots: int) -> List[str]:
        """Config names for a run of ``shots`` shots on ``dataset`` (its DATASET.NAME), most specific
        first; the experiment planner (``reproduce``) uses the first that exists. For a method whose
        published schedule changes with the shots (CoOp); by default the given config."""
        return [cfg_name]

    @classmethod
    def needs_own_engine(cls, cfg) -> Optional[str]:
        """What in ``cfg`` only this project's own training loop implements (named for the error
        another engine raises), or None. Here: choosing the epoch (TEST.FINAL_MODEL best_val) under
        another selection protocol than Dassl's own few-shot val; subclasses add theirs."""
        if cls.trains_in_epochs and cfg.TEST.FINAL_MODEL == "best_val" and cfg.SELECTION.PROTOCOL != "fewshot_val":
            return (f"TEST.FINAL_MODEL best_val under SELECTION.PROTOCOL {cfg.SELECTION.PROTOCOL} (Dassl's loop chooses the "
                    "epoch on its few-shot val); use SELECTION.PROTOCOL fewshot_val or TEST.FINAL_MODEL last_step")
        return None

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
        # Every hyperparameter search of this run (engine/selection.py), for results.json.
        self.searches: List[selection.Search] = []
        # (epoch, score) of TEST.FINAL_MODEL best_val, on the protocol's split; kept in checkpoints.
        self.epoch_scores: List[Tuple[int, float]] = []
        self._epoch_split: Optional[str] = None

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
        """Track a module for checkpoints; trainable ones get an optimiser (``make_optimizer``)."""
        self._modules[name] = module
        self._optims[name] = self.make_optimizer(name, module) if trainable else None

    def make_optimizer(self, name: str, module: nn.Module) -> torch.optim.Optimizer:
        """The optimiser of a trainable module, from OPTIM.* and built on first use (``LazyOptimizer``:
        an evaluation-only run never imports torch's compiler stack); another engine (Dassl) supplies its own."""
        return LazyOptimizer(module.parameters(), self.cfg.OPTIM)

    def models(self) -> Dict[str, nn.Module]:
        """Every registered module by name (trainable or not), in registration order."""
        return dict(self._modules)

    def optimizer(self, name: str) -> Optional[torch.optim.Optimizer]:
        """The torch optimiser of a registered module (None for a frozen one); a lazy one is built here."""
        opt = self._optims.get(name)
        return opt.build() if isinstance(opt, LazyOptimizer) else opt

    def trainable_modules(self) -> Dict[str, nn.Module]:
        return {k: m for k, m in self._modules.items() if self._optims.get(k) is not None}

    # --------------------------------------------------------------- train
    def train_batches(self, epoch: int) -> Iterable:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_backward(self, batch) -> Dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self) -> None:  # pragma: no cover - abstract
        """The one-step fit of a trainer with ``trains_in_epochs = False`` (a solver, a closed form);
        it fills the registered modules, and the engine that calls it saves them."""
        raise NotImplementedError

    #: A ``torch.amp.GradScaler`` while a trainer runs with PREC amp (the trainers that offer amp set it).
    scaler: Optional["torch.amp.GradScaler"] = None

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``: ``zero_grads``, ``backward``, ``apply_grads``."""
        self.zero_grads()
        self.backward(loss)
        self.apply_grads()

    def zero_grads(self) -> None:
        for opt in self._optims.values():
            if opt is not None:
                opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``loss``'s gradients (scaled under amp); a step may call it several times."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def apply_grads(self) -> None:
        """Every optimiser steps on the accumulated gradients (unscaled and checked under amp)."""
        for opt in self._optims.values():
            if opt is not None:
                if self.scaler is not None:
                    self.scaler.step(opt)
                else:
                    opt.step()
        if self.scaler is not None:
            self.scaler.update()

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
        if not self.uses_training_data or not self.trainable_modules():
            return
        if not self.trains_in_epochs:  # one fit, saved as epoch 1 (model.pth.tar-1)
            if self.start_epoch >= 1:
                log.info("%s already fitted (resumed)", type(self).__name__)
                return
            self.fit()
            self.save_model(0, epoch_name(1))
            self.start_epoch = 1
            return
        self._epoch_split = self.epoch_selection_split()
        if self.start_epoch >= max_epoch:
            log.info("All %d epochs already done", max_epoch)
            self._deploy_best_epoch()
            self.after_training()
            return
        log.info("Training %s for epochs %d..%d", type(self).__name__, self.start_epoch + 1, max_epoch)
        t0 = time.time()
        bar = progress(range(self.start_epoch, max_epoch), desc="Epochs", unit="ep", min_total=3)
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
        self._deploy_best_epoch()
        self.after_training()

    def after_training(self) -> None:
        """Work on the deployed weights after the last epoch (e.g. Tip-Adapter-F's alpha/beta search);
        both engines call it once training is over. Whatever it changes it saves itself."""

    def _deploy_best_epoch(self) -> None:
        """TEST.FINAL_MODEL best_val: record the epoch search and load the chosen epoch's weights."""
        if self._epoch_split is None or not self.epoch_scores:
            return
        chosen = self._record_epoch_search()
        log.info("Deploying the model of epoch %d, the best on %s (%.2f%%)", chosen, self._epoch_split, self.best_val)
        self.load_model(self.output_dir, epoch=None, best=True)

    # ------------------------------------------------------------ selection
    def selection_protocol(self) -> str:
        """SELECTION.PROTOCOL, checked."""
        return selection.protocol_of(self.cfg)

    def selection_split(self, what: str, fix: str) -> Optional[str]:
        """The split ``what`` is chosen on (None under protocol ``none``); refuses a split the dataset
        lacks (ImageNet's val is its test set) in one line. ``fix`` says how to set it without a search."""
        split = selection.selection_split(self.cfg, self.dm.dataset, what, fix)
        if split == "test":
            selection.warn_test_selection(what)
        return split

    def select(
        self,
        knob: str,
        candidates: Iterable[Any],
        score: Callable[[Any, str], float],
        default: Any = None,
        fix: str = "",
        ties: str = "first",
        refine: Optional[selection.Refinement] = None,
    ) -> Any:
        """Choose ``knob`` under the protocol: ``score(value, split)`` for every candidate on the
        protocol's split (recorded for results.json), or ``default`` under ``none`` (refused when the
        knob has no configured value: ``default`` None)."""
        split = self.selection_split(knob, fix or f"fix {knob} in the config")
        if split is None:
            if default is None:
                raise ConfigError(f"SELECTION.PROTOCOL none runs no search, but {knob} has no configured value to use "
                                  f"instead; {fix or 'set it in the config'}")
            log.info("SELECTION.PROTOCOL none: %s = %s (configured, no search)", knob, default)
            return default
        found = selection.search(knob, candidates, lambda v: score(v, split), split=split, ties=ties, refine=refine)
        self.searches.append(found)
        return found.chosen

    def selection_record(self) -> Dict:
        """results.json's ``selection``: the protocol and every search of the run (values, scores, choice)."""
        return {"protocol": self.selection_protocol(), "searches": [s.record() for s in self.searches]}

    def epoch_selection_split(self) -> Optional[str]:
        """Where TEST.FINAL_MODEL best_val scores each epoch (None: not applied, the last epoch is deployed)."""
        if self.cfg.TEST.FINAL_MODEL != "best_val":
            return None
        split = self.selection_split("the deployed epoch (TEST.FINAL_MODEL best_val)", "use TEST.FINAL_MODEL last_step")
        if split is None:
            log.info("SELECTION.PROTOCOL none: TEST.FINAL_MODEL best_val is not applied; the last epoch is deployed")
        return split

    def _record_epoch_search(self) -> int:
        """The epoch search of TEST.FINAL_MODEL best_val as a selection record (first best on ties)."""
        found = selection.Search("epoch", self._epoch_split, [(int(e), float(a)) for e, a in sorted(self.epoch_scores)])
        found.chosen = found.best("first")
        self.searches = [s for s in self.searches if s.knob != "epoch"] + [found]
        return found.chosen

    def after_epoch(self, epoch: int) -> None:
        if self._epoch_split is not None:
            acc = self.evaluate(self._epoch_split, quiet=True)["accuracy"]
            self.epoch_scores = [(e, a) for e, a in self.epoch_scores if e != epoch + 1] + [(epoch + 1, acc)]
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
        inject_fault(self, epoch)

    # --------------------------------------------------------- checkpoints
    def _module_state(self, name: str, epoch: int) -> Dict:
        module = self._modules[name]
        state = {"state_dict": {k: v.detach().cpu() for k, v in self.state_dict_for_save(name, module).items()}, "epoch": epoch + 1}
        opt = self._optims.get(name)
        if opt is not None:
            state["optimizer"] = opt.state_dict()
        state["best_val"] = float(self.best_val)
        state["epoch_scores"] = [[int(e), float(a)] for e, a in self.epoch_scores]
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
            self.epoch_scores = [(int(e), float(a)) for e, a in ckpt.get("epoch_scores", [])]
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
