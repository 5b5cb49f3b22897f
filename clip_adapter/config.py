"""The one place where configuration defaults live.

Key names follow Dassl's ``get_cfg_default()`` and CoOp's ``extend_cfg`` so that CoOp's and
Dassl's YAML files load unchanged; nodes this project adds (``TRAINER.CLIP_ADAPTER``,
``FEATURES``, ...) sit beside them. The merge order is fixed:
defaults <- dataset YAML <- trainer YAML <- CLI flags <- ``KEY VALUE`` opts, then freeze.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterable, List, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from clip_adapter.errors import ConfigError
from clip_adapter.utils import atomic_write_text


def get_cfg_default() -> CN:
    """Return a fresh, mutable copy of every default (Dassl keys first, then this project's)."""
    _C = CN()
    _C.VERSION = 1
    # Where a run writes log.txt, config.yaml, checkpoints and results.json.
    _C.OUTPUT_DIR = "./output"
    # A run folder to resume from (Dassl semantics); --resume sets it.
    _C.RESUME = ""
    # Seed for random, numpy and torch. Negative means "do not seed" (Dassl); 0 is a real seed.
    _C.SEED = 1
    _C.USE_CUDA = True
    _C.VERBOSE = True

    # ----------------------------------------------------------------- input
    _C.INPUT = CN()
    # SIZE, INTERPOLATION, PIXEL_MEAN and PIXEL_STD: empty = the backbone's own preprocessing (its
    # weights' input resolution and statistics). A value that disagrees with the weights (size, mean,
    # std) is an error naming both; CoOp's YAML files state CLIP's values, which agree with OpenAI's models.
    _C.INPUT.SIZE = ()
    _C.INPUT.INTERPOLATION = ""
    # Test-time resizing (and the resize before a non-RRC training crop):
    #   clip: short side to max(SIZE), centre crop SIZE (CLIP's own evaluation; Dassl 0.6.3's test transform)
    #   coop: both sides to SIZE, no crop (the CoOp-style resize the CLIP-Adapter paper's main tables used)
    _C.INPUT.PRESET = "clip"
    # Training augmentations in order; test always uses resize + centre crop + normalize.
    _C.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    _C.INPUT.NO_TRANSFORM = False
    # (Dassl's ImageNet statistics would be wrong for CLIP; SigLIP's are 0.5/0.5.)
    _C.INPUT.PIXEL_MEAN = []
    _C.INPUT.PIXEL_STD = []
    _C.INPUT.CROP_PADDING = 4
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)
    _C.INPUT.CUTOUT_N = 1
    _C.INPUT.CUTOUT_LEN = 16
    _C.INPUT.GN_MEAN = 0.0
    _C.INPUT.GN_STD = 0.15
    _C.INPUT.RANDAUGMENT_N = 2
    _C.INPUT.RANDAUGMENT_M = 10
    _C.INPUT.COLORJITTER_B = 0.4
    _C.INPUT.COLORJITTER_C = 0.4
    _C.INPUT.COLORJITTER_S = 0.4
    _C.INPUT.COLORJITTER_H = 0.1
    _C.INPUT.RGS_P = 0.2
    _C.INPUT.GB_P = 0.5
    _C.INPUT.GB_K = 21

    # --------------------------------------------------------------- dataset
    _C.DATASET = CN()
    # Folder that holds every dataset in CoOp's layout ($DATA in the scripts).
    _C.DATASET.ROOT = ""
    _C.DATASET.NAME = ""
    _C.DATASET.SOURCE_DOMAINS = ()
    _C.DATASET.TARGET_DOMAINS = ()
    _C.DATASET.NUM_LABELED = -1
    # Shots per class for training (-1: the whole training split).
    _C.DATASET.NUM_SHOTS = -1
    _C.DATASET.VAL_PERCENT = 0.1
    _C.DATASET.STL10_FOLD = -1
    _C.DATASET.CIFAR_C_TYPE = ""
    _C.DATASET.CIFAR_C_LEVEL = 1
    _C.DATASET.ALL_AS_UNLABELED = False
    # CoOp/CoCoOp: all | base | new (first / second half of the sorted labels).
    _C.DATASET.SUBSAMPLE_CLASSES = "all"
    # Download missing files automatically where the licence allows it.
    _C.DATASET.DOWNLOAD = False
    # Decode every image of the run's splits once and leave out unreadable ones (logged with a
    # count) instead of stopping at the first with an error naming it.
    _C.DATASET.SKIP_BAD_IMAGES = False
    # Your own data without code (DATASET.NAME "Custom"); configs/datasets/custom_example.yaml
    # documents each key with examples.
    _C.DATASET.CUSTOM = CN()
    # A folder of class folders (optionally inside train/ val/ test/), a split file in CoOp's JSON
    # layout, or a CSV with columns path,label,classname[,split]. Relative: under DATASET.ROOT.
    _C.DATASET.CUSTOM.PATH = ""
    # auto | folders | json | csv (auto: a folder -> folders, *.json -> json, *.csv -> csv).
    _C.DATASET.CUSTOM.FORMAT = "auto"
    # json/csv: the folder their image paths are relative to ("" = the file's own folder).
    _C.DATASET.CUSTOM.IMAGE_DIR = ""
    # Prompt template(s), each with a {} slot for the class name (several = averaged, as an ensemble).
    _C.DATASET.CUSTOM.TEMPLATES = ["a photo of a {}."]
    # Optional class names: a text file (line i = the name of label i) or a JSON object mapping a
    # class folder or a label to its name. "" = folder names / the names in the file.
    _C.DATASET.CUSTOM.CLASSNAMES_FILE = ""
    # When val and/or test are not given they are cut from train, per class, with this seed (not
    # the run's --seed, so every run sees the same split) and these fractions of each class.
    _C.DATASET.CUSTOM.SPLIT_SEED = 1
    _C.DATASET.CUSTOM.VAL_FRACTION = 0.2
    _C.DATASET.CUSTOM.TEST_FRACTION = 0.3
    # Where that generated split is written and reused ("" = next to the data, named after the
    # data, seed and fractions). Relative: next to the data.
    _C.DATASET.CUSTOM.SPLIT_FILE = ""

    # ------------------------------------------------------------ dataloader
    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = 4
    _C.DATALOADER.K_TRANSFORMS = 1
    _C.DATALOADER.RETURN_IMG0 = False
    _C.DATALOADER.TRAIN_X = CN()
    _C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_X.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_X.N_INS = 16
    _C.DATALOADER.TRAIN_U = CN()
    _C.DATALOADER.TRAIN_U.SAME_AS_X = True
    _C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
    _C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
    _C.DATALOADER.TRAIN_U.N_DOMAIN = 0
    _C.DATALOADER.TRAIN_U.N_INS = 16
    _C.DATALOADER.TEST = CN()
    _C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
    _C.DATALOADER.TEST.BATCH_SIZE = 100

    # ----------------------------------------------------------------- model
    _C.MODEL = CN()
    # A checkpoint of the trainable parts (adapter, prompt context) to start from.
    _C.MODEL.INIT_WEIGHTS = ""
    _C.MODEL.BACKBONE = CN()
    # Which library loads the model (clip_adapter.registry.BACKBONES; docs/backbones.md):
    #   openai: OpenAI's CLIP through the clip package; open_clip: open_clip's models (LAION, SigLIP, ...).
    _C.MODEL.BACKBONE.FAMILY = "openai"
    # The architecture. openai: a name the clip package knows (RN50, ViT-B/16, ...), "tiny" (offline
    # stand-in) or a weights file; open_clip: an open_clip model name (ViT-B-32, ViT-B-16-SigLIP, ...),
    # "local-dir:<folder>", "hf-hub:<org/repo>", or the offline stand-ins "tiny-vit" / "tiny-sigmoid".
    _C.MODEL.BACKBONE.NAME = "RN50"
    # The weights: "" (openai: the weights NAME names), an open_clip pretrained tag (laion2b_s34b_b79k,
    # webli, openai, ...), or a weights file (named as known weights when its checksum is theirs).
    _C.MODEL.BACKBONE.WEIGHTS = ""
    _C.MODEL.BACKBONE.PRETRAINED = True
    # Where weights are downloaded/looked up ("" = $CLIP_ADAPTER_WEIGHTS, else ~/.cache/clip).
    _C.MODEL.BACKBONE.CACHE_DIR = ""
    _C.MODEL.HEAD = CN()
    _C.MODEL.HEAD.NAME = ""
    _C.MODEL.HEAD.HIDDEN_LAYERS = ()
    _C.MODEL.HEAD.ACTIVATION = "relu"
    _C.MODEL.HEAD.BN = True
    _C.MODEL.HEAD.DROPOUT = 0.0

    # ------------------------------------------------------------- optimiser
    _C.OPTIM = CN()
    _C.OPTIM.NAME = "sgd"
    _C.OPTIM.LR = 0.002
    _C.OPTIM.WEIGHT_DECAY = 5e-4
    _C.OPTIM.MOMENTUM = 0.9
    _C.OPTIM.SGD_DAMPNING = 0
    _C.OPTIM.SGD_NESTEROV = False
    _C.OPTIM.RMSPROP_ALPHA = 0.99
    _C.OPTIM.ADAM_BETA1 = 0.9
    _C.OPTIM.ADAM_BETA2 = 0.999
    _C.OPTIM.STAGED_LR = False
    _C.OPTIM.NEW_LAYERS = ()
    _C.OPTIM.BASE_LR_MULT = 0.1
    # single_step | multi_step | cosine
    _C.OPTIM.LR_SCHEDULER = "cosine"
    _C.OPTIM.STEPSIZE = (-1,)
    _C.OPTIM.GAMMA = 0.1
    _C.OPTIM.MAX_EPOCH = 10
    # Warm-up epochs (<= 0: none); constant uses WARMUP_CONS_LR, linear ramps from WARMUP_MIN_LR.
    _C.OPTIM.WARMUP_EPOCH = -1
    _C.OPTIM.WARMUP_TYPE = "linear"
    _C.OPTIM.WARMUP_CONS_LR = 1e-5
    _C.OPTIM.WARMUP_MIN_LR = 1e-5
    _C.OPTIM.WARMUP_RECOUNT = True

    # ----------------------------------------------------------------- train
    _C.TRAIN = CN()
    # Save model.pth.tar-<epoch> every N epochs (0: only at the end).
    _C.TRAIN.CHECKPOINT_FREQ = 0
    # The rolling resume point is rewritten after the first epoch, then at most every N seconds (and
    # at every kept epoch): on cached features an epoch takes milliseconds and a fsync'd write per
    # epoch would dominate the run; a crash loses at most N seconds of training.
    _C.TRAIN.RESUME_SAVE_SECONDS = 10.0
    _C.TRAIN.PRINT_FREQ = 10
    _C.TRAIN.COUNT_ITER = "train_x"

    # ------------------------------------------------------------------ test
    _C.TEST = CN()
    _C.TEST.EVALUATOR = "Classification"
    _C.TEST.PER_CLASS_RESULT = False
    _C.TEST.COMPUTE_CMAT = False
    _C.TEST.NO_TEST = False
    _C.TEST.SPLIT = "test"
    # last_step | best_val (the epoch chosen on the split SELECTION.PROTOCOL names).
    _C.TEST.FINAL_MODEL = "last_step"

    # ------------------------------------------------------------- selection
    # How every hyperparameter (alpha, C, the deployed epoch, ...) is chosen; see
    # clip_adapter/engine/selection.py. fewshot_val: CoOp's few-shot val (min(shots, 4) per class);
    # full_val: the dataset's whole val split (Tip-Adapter's and GDA's code); none: the configured
    # values, no search (CLAP's validation-free setting); test: on the test split, only to reproduce
    # a published figure (logged loudly, recorded in results.json). A dataset without the chosen
    # split (ImageNet: its val is its test set) refuses the search.
    _C.SELECTION = CN()
    _C.SELECTION.PROTOCOL = "fewshot_val"

    # --------------------------------------------------------------- trainer
    _C.TRAINER = CN()
    _C.TRAINER.NAME = "ZeroshotCLIP"

    # Each trainer adds its own node (TRAINER.COOP, TRAINER.CLIP_ADAPTER, ...) when it registers:
    # see ``add_config_node`` and the ``config_defaults`` of the trainer classes.

    # Frozen-encoder feature cache (see clip_adapter/features.py).
    _C.FEATURES = CN()
    # cached: encode each image view once and train on stored features; exact: the paper's loop.
    _C.FEATURES.MODE = "cached"
    # Augmented views K stored per training image; epoch e trains on view e mod K (so K >= MAX_EPOCH
    # is the paper's fresh-crop-every-epoch loop). 7: the most views that keep the paper's sweep
    # >= 50x cheaper than the reference loop (docs/feature-cache.md).
    _C.FEATURES.TRAIN_VIEWS = 7
    # Cache folder ("" = the nearest "output" ancestor of OUTPUT_DIR + /feature_cache, see features.default_cache_dir).
    _C.FEATURES.CACHE_DIR = ""
    # Images per image-encoder batch while filling the cache (and for val/test in exact mode).
    _C.FEATURES.BATCH_SIZE = 128
    # Precision of the frozen image encoder, one value for every trainer so that they share features
    # (a trainer's own PREC governs only its trainable path): fp16 (CLIP's released precision) on
    # CUDA and fp32 elsewhere, or fp32, or amp (fp32 weights, fp16 autocast; CUDA only).
    _C.FEATURES.PREC = "fp16"

    # ------------------------------------------------------------ experiment
    # Bookkeeping that the scripts set so the results tool can group runs; nothing here changes a
    # number. Both are recorded in results.json.
    _C.EXPERIMENT = CN()
    # Transfer evaluations (scripts/xd_test.sh): the registered name of the dataset the evaluated
    # model was trained on. The CLI reads it from the checkpoint; a training-free trainer (zero-shot
    # CLIP) has none, so the script names the source here.
    _C.EXPERIMENT.SOURCE = ""
    # Ablation runs (scripts/ablation.sh): the config key that the ablation sweeps.
    _C.EXPERIMENT.SWEEP_KEY = ""
    for path, (node, _owner) in _REGISTERED_NODES.items():
        _attach(_C, path, node.clone())
    return _C


# ------------------------------------------------------------ compatibility keys
# Keys that exist so that Dassl's and CoOp's YAML files load unchanged, but that nothing in this
# project reads (Dassl's augmentations and samplers for domain generalisation, its model heads, ...).
# A run logs once which of them were set to a non-default value: they have no effect here.
# tests/test_config.py checks that every other default key is read somewhere.
COMPAT_KEYS = (
    "VERSION",
    "INPUT.NO_TRANSFORM", "INPUT.CUTOUT_N", "INPUT.CUTOUT_LEN", "INPUT.GN_MEAN", "INPUT.GN_STD",
    "INPUT.RANDAUGMENT_N", "INPUT.RANDAUGMENT_M", "INPUT.COLORJITTER_B", "INPUT.COLORJITTER_C",
    "INPUT.COLORJITTER_S", "INPUT.COLORJITTER_H", "INPUT.RGS_P", "INPUT.GB_P", "INPUT.GB_K",
    "DATASET.SOURCE_DOMAINS", "DATASET.TARGET_DOMAINS",
    "DATASET.NUM_LABELED", "DATASET.VAL_PERCENT", "DATASET.STL10_FOLD", "DATASET.CIFAR_C_TYPE",
    "DATASET.CIFAR_C_LEVEL", "DATASET.ALL_AS_UNLABELED",
    "DATALOADER.K_TRANSFORMS", "DATALOADER.RETURN_IMG0", "DATALOADER.TRAIN_X.SAMPLER",
    "DATALOADER.TRAIN_X.N_DOMAIN", "DATALOADER.TRAIN_X.N_INS", "DATALOADER.TRAIN_U.SAME_AS_X",
    "DATALOADER.TRAIN_U.SAMPLER", "DATALOADER.TRAIN_U.BATCH_SIZE", "DATALOADER.TRAIN_U.N_DOMAIN",
    "DATALOADER.TRAIN_U.N_INS", "DATALOADER.TEST.SAMPLER",
    "MODEL.BACKBONE.PRETRAINED", "MODEL.HEAD.NAME", "MODEL.HEAD.HIDDEN_LAYERS", "MODEL.HEAD.ACTIVATION",
    "MODEL.HEAD.BN", "MODEL.HEAD.DROPOUT",
    "OPTIM.RMSPROP_ALPHA", "OPTIM.STAGED_LR", "OPTIM.NEW_LAYERS", "OPTIM.BASE_LR_MULT",
    "TRAIN.COUNT_ITER", "TEST.EVALUATOR", "TEST.COMPUTE_CMAT",
)


def ineffective_settings(cfg: CN) -> List[Tuple[str, object]]:
    """(key, value) of every compatibility key that ``cfg`` sets to a non-default value."""
    defaults = get_cfg_default()
    out = []
    for key in COMPAT_KEYS:
        value, default = _lookup(cfg, key), _lookup(defaults, key)
        if value is not None and value != default:
            out.append((key, value))
    return out


# ---------------------------------------------------------------- registered nodes
# dotted path -> (defaults node, owner): filled when a trainer (or plugin) registers, the way CoOp's
# ``extend_cfg`` adds TRAINER.COOP to Dassl's defaults. ``get_cfg_default`` attaches every one.
_REGISTERED_NODES: Dict[str, Tuple[CN, str]] = {}


def add_config_node(path: str, node: CN, owner: str) -> None:
    """Declare a node of defaults (``TRAINER.CLIP_ADAPTER``) that ``get_cfg_default`` adds from now on.

    Two owners may declare the same path only with identical defaults (KgCoOp reading CoOp's node);
    a different declaration is refused, so a plugin can never silently change another trainer's defaults.
    """
    if not isinstance(node, CN):
        raise ConfigError(f"{owner}: config_defaults() must return yacs CfgNode objects, got {type(node).__name__} for {path}")
    core = _core_defaults()
    parent, _, leaf = path.rpartition(".")
    if _lookup(core, path) is not None:
        raise ConfigError(f"{owner} declares config node {path}, which is a core key of clip_adapter/config.py; pick another name")
    if parent and _lookup(core, parent) is None and parent not in _REGISTERED_NODES:
        raise ConfigError(f"{owner} declares config node {path}, but its parent {parent} does not exist")
    if path in _REGISTERED_NODES:
        known, known_owner = _REGISTERED_NODES[path]
        if known.dump() != node.dump():
            raise ConfigError(f"{owner} declares config node {path} with other defaults than {known_owner}; "
                              "share the node unchanged or use a node of your own")
        return
    _REGISTERED_NODES[path] = (node.clone(), owner)


def registered_config_nodes() -> Dict[str, str]:
    """dotted path -> owner of every node added by a registered trainer or plugin."""
    return {path: owner for path, (_node, owner) in _REGISTERED_NODES.items()}


def _lookup(cfg: CN, path: str):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def _attach(cfg: CN, path: str, node: CN) -> None:
    parent, _, leaf = path.rpartition(".")
    target = _lookup(cfg, parent) if parent else cfg
    target[leaf] = node


_CORE_CACHE: List[CN] = []


def _core_defaults() -> CN:
    if not _CORE_CACHE:
        saved = dict(_REGISTERED_NODES)
        _REGISTERED_NODES.clear()
        try:
            _CORE_CACHE.append(get_cfg_default())
        finally:
            _REGISTERED_NODES.update(saved)
    return _CORE_CACHE[0]


def _check_yaml(path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path} (check the path passed to --config-file/--dataset-config-file)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"malformed YAML in {path}{where}: fix the syntax there") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")


def merge_from_file(cfg: CN, path: str) -> None:
    """Merge one YAML file, naming the file and the key when a key is unknown or mistyped."""
    _check_yaml(path)
    try:
        cfg.merge_from_file(path)
    except KeyError as exc:
        raise ConfigError(f"unknown config key in {path}: {_key_from_error(exc)} (see clip_adapter/config.py for the known keys)") from None
    except ValueError as exc:
        raise ConfigError(f"bad value in {path}: {exc}") from None


def merge_from_list(cfg: CN, opts: Sequence[str], source: str = "command-line opts") -> None:
    """Merge ``KEY VALUE`` pairs with errors that name the key (yacs' own errors are cryptic)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"{source}: KEY VALUE pairs expected, got an odd number of items: {opts}")
    for key, value in zip(opts[0::2], opts[1::2]):
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, CN) or part not in node:
                raise ConfigError(f"unknown config key in {source}: {key} (see clip_adapter/config.py for the known keys)")
            node = node[part]
        if not isinstance(node, CN) or parts[-1] not in node:
            raise ConfigError(f"unknown config key in {source}: {key} (see clip_adapter/config.py for the known keys)")
        old = node[parts[-1]]
        if isinstance(old, float) and isinstance(parse_value(value), int) and not isinstance(parse_value(value), bool):
            value = str(float(parse_value(value)))  # "RATIO 0" means 0.0, not a type error
        try:
            cfg.merge_from_list([key, value])
        except ValueError as exc:
            raise ConfigError(
                f"type mismatch in {source} for {key}: got {value!r}, expected a {type(old).__name__} like {old!r}"
            ) from exc
        except AssertionError as exc:  # yacs raises bare assertion errors for some conversions
            raise ConfigError(f"bad value in {source} for {key}: {value!r} ({exc})") from None


def _key_from_error(exc: KeyError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.replace("Non-existent config key: ", "")


def parse_value(text: str):
    """Interpret a command-line value the way yacs does (literal if it parses, else string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def setup_cfg(
    dataset_config_file: str = "",
    config_file: str = "",
    cli: dict | None = None,
    opts: Iterable[str] = (),
    extra_defaults=None,
    base: CN | None = None,
) -> CN:
    """Build the frozen run config: defaults <- dataset YAML <- trainer YAML <- CLI flags <- opts.

    ``cli`` maps config keys to values that the CLI flags set (``--root`` -> ``DATASET.ROOT``);
    ``None`` values are skipped so an absent flag never overrides a file (and ``--seed 0`` does).
    ``base`` replaces this project's defaults (``--engine dassl``: Dassl's, extended with ours).
    """
    cfg = base if base is not None else get_cfg_default()
    if extra_defaults is not None:
        extra_defaults(cfg)
    if dataset_config_file:
        merge_from_file(cfg, dataset_config_file)
    if config_file:
        merge_from_file(cfg, config_file)
    flat = []
    for key, value in (cli or {}).items():
        if value is None:
            continue
        flat += [key, str(value) if not isinstance(value, str) else value]
    if flat:
        merge_from_list(cfg, flat, source="command-line flags")
    merge_from_list(cfg, list(opts))
    cfg.freeze()
    return cfg


def save_cfg(cfg: CN, output_dir: str) -> str:
    """Write the resolved config into the run folder so every number can be traced to its settings."""
    path = os.path.join(output_dir, "config.yaml")
    atomic_write_text(path, cfg.dump())
    return path
