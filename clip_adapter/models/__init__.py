"""Model layer shared by every trainer: CLIP loading, text classifier, adapters, prompt learner.

It takes tensors and class names, never datasets.
"""
