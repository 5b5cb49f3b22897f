"""The training engine: trainer base class, optimiser/scheduler, checkpoints, evaluator, logging.

It knows no particular trainer or dataset; it finds them through the registries.
"""
