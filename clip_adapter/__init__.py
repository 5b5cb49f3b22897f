"""CLIP-Adapter and its baselines (zero-shot CLIP, CoOp, linear probe) for few-shot CLIP adaptation."""
__version__ = "0.1.0"
