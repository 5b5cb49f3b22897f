"""Zero-shot CLIP: the frozen model with a text classifier of fixed prompts; nothing trains."""
from __future__ import annotations

from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.clip_base import ClipTrainer


@TRAINERS.register()
class ZeroshotCLIP(ClipTrainer):
    """The dataset's hand-crafted template (``a photo of a {}, a type of pet.``)."""

    needs_training = False
    template_mode = "single"

    def build_model(self) -> None:
        if self.cfg.TRAINER.ZEROSHOT.TEMPLATES:
            self.template_mode = self.cfg.TRAINER.ZEROSHOT.TEMPLATES
        super().build_model()


@TRAINERS.register()
class ZeroshotCLIP2(ClipTrainer):
    """CoOp's ZeroshotCLIP2: the mean of ImageNet's seven selected templates and, for every dataset
    but ImageNet, the dataset's own template (``coop_ensemble``, see clip_adapter.data.templates)."""

    needs_training = False
    template_mode = "coop_ensemble"
