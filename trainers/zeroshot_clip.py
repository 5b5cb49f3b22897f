"""Zero-shot CLIP: the frozen model with a text classifier of fixed prompts; nothing trains.

On a SigLIP backbone the logits carry its learned bias (``sigmoid(logit)`` is SigLIP's probability of
a match); the prediction, the argmax over classes, is the same with or without it.
"""
from __future__ import annotations

from typing import Dict

from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.registry import TRAINERS


class _ZeroShot(ClipTrainer):
    """Nothing learned: no epochs, no dependence on shots or seed, any class names."""

    trains_in_epochs = False
    uses_training_data = False

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # "" uses the dataset's hand-crafted template; "ensemble" ImageNet's seven; "coop_ensemble"
        # the seven plus the dataset's own (what ZeroshotCLIP2 uses).
        node.TEMPLATES = ""
        return {"TRAINER.ZEROSHOT": node}


@TRAINERS.register()
class ZeroshotCLIP(_ZeroShot):
    """The dataset's hand-crafted template (``a photo of a {}, a type of pet.``)."""

    template_mode = "single"

    def build_model(self) -> None:
        if self.cfg.TRAINER.ZEROSHOT.TEMPLATES:
            self.template_mode = self.cfg.TRAINER.ZEROSHOT.TEMPLATES
        super().build_model()


@TRAINERS.register()
class ZeroshotCLIP2(_ZeroShot):
    """CoOp's ZeroshotCLIP2: the mean of ImageNet's seven selected templates and, for every dataset
    but ImageNet, the dataset's own template (``coop_ensemble``, see clip_adapter.data.templates)."""

    template_mode = "coop_ensemble"
