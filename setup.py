"""Distribution ``clip-adapter``: the library ``clip_adapter`` with trainers/ and datasets/ mapped inside it.

``setuptools<81`` is a runtime requirement on purpose: the openai ``clip`` package imports
``pkg_resources``, which setuptools 81 removed.
"""
from setuptools import setup

setup(
    name="clip-adapter",
    version="0.1.0",
    description="CLIP-Adapter and its baselines for few-shot adaptation of CLIP, CoOp/Dassl compatible",
    python_requires=">=3.9",
    packages=[
        "clip_adapter",
        "clip_adapter.data",
        "clip_adapter.engine",
        "clip_adapter.models",
        "clip_adapter.dassl",
        "clip_adapter.app",
        "clip_adapter.app.doctor",
        "clip_adapter.app.results",
        "clip_adapter.backbones",
        "clip_adapter.app.experiments",
        "clip_adapter.app.sweep",
        "clip_adapter.trainers",
        "clip_adapter.datasets",
    ],
    package_dir={"clip_adapter.trainers": "trainers", "clip_adapter.datasets": "datasets"},
    package_data={"clip_adapter.datasets": ["*.json"], "clip_adapter": ["*.json"]},
    install_requires=[
        "torch",
        "torchvision",
        "yacs",
        "pyyaml",
        "clip-anytorch==2.6.0",
        "open-clip-torch>=3.0",  # MODEL.BACKBONE.FAMILY open_clip (LAION, SigLIP, ...); SigLIP's tokenizer also needs transformers
        "setuptools<81",
        "gdown",
        "tabulate",
        "matplotlib",
        "tqdm",
        "Pillow",
        "numpy",
        "filelock",
        "scikit-learn",  # LinearProbeCLIP: logistic regression (CoOp's linear-probe protocol)
        "scipy",
        "submitit>=1.5",  # clip_adapter.app.sweep: runs sweeps on SLURM (and its local executor)
    ],
    extras_require={
        "test": ["pytest"],
        # What Dassl imports at run time (`train.py --engine dassl`, clip_adapter.dassl). Dassl itself is
        # on no package index: install it from its git repository first (docs/dassl.md).
        "dassl": ["yacs", "gdown", "tabulate", "tqdm", "scipy", "scikit-learn", "ftfy", "regex", "tensorboard", "wilds"],
    },
    entry_points={"console_scripts": ["clip-adapter=clip_adapter.app.commands:main", "clip-adapter-train=clip_adapter.app.train:main"]},
)
