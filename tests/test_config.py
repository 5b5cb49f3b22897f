"""Config: merge order, CoOp/Dassl YAML compatibility, and errors that name the key and the file."""
import textwrap

import pytest

from clip_adapter.config import get_cfg_default, setup_cfg
from clip_adapter.errors import ConfigError

# The shape of CoOp's configs/trainers/CoOp/rn50.yaml and configs/datasets/caltech101.yaml.
COOP_TRAINER_YAML = """
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 32
  TEST:
    BATCH_SIZE: 100
  NUM_WORKERS: 8

INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]

OPTIM:
  NAME: "sgd"
  LR: 0.002
  MAX_EPOCH: 200
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5

TRAIN:
  PRINT_FREQ: 5

MODEL:
  BACKBONE:
    NAME: "RN50"
"""
COOP_DATASET_YAML = 'DATASET:\n  NAME: "Caltech101"\n'


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_coop_yaml_files_load_unchanged(tmp_path):
    ds = write(tmp_path, "caltech101.yaml", COOP_DATASET_YAML)
    tr = write(tmp_path, "rn50.yaml", COOP_TRAINER_YAML)
    cfg = setup_cfg(ds, tr, {"TRAINER.NAME": "CoOp"}, ["TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CSC", "True", "DATASET.NUM_SHOTS", "16"])
    assert cfg.DATASET.NAME == "Caltech101"
    assert cfg.OPTIM.MAX_EPOCH == 200 and cfg.OPTIM.WARMUP_TYPE == "constant"
    assert cfg.OPTIM.WARMUP_CONS_LR == pytest.approx(1e-5)
    assert tuple(cfg.INPUT.SIZE) == (224, 224)
    assert cfg.TRAINER.COOP.N_CTX == 4 and cfg.TRAINER.COOP.CSC is True
    assert cfg.is_frozen()


def test_every_coop_extend_cfg_key_exists():
    cfg = get_cfg_default()
    for key in ("N_CTX", "CSC", "CTX_INIT", "PREC", "CLASS_TOKEN_POSITION"):
        assert key in cfg.TRAINER.COOP
    for key in ("N_CTX", "CTX_INIT", "PREC"):
        assert key in cfg.TRAINER.COCOOP
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    assert cfg.TEST.FINAL_MODEL in ("last_step", "best_val")


def test_merge_order_defaults_dataset_trainer_cli_opts(tmp_path):
    ds = write(tmp_path, "ds.yaml", "DATASET:\n  NAME: Smoke\n  NUM_SHOTS: 2\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 3\nSEED: 7\n")
    tr = write(tmp_path, "tr.yaml", "OPTIM:\n  LR: 0.2\nSEED: 8\n")
    cfg = setup_cfg(ds, tr, {"SEED": 9, "DATASET.ROOT": "/data"}, ["DATASET.NUM_SHOTS", "4"])
    assert cfg.OPTIM.MAX_EPOCH == 3  # dataset yaml over defaults
    assert cfg.OPTIM.LR == pytest.approx(0.2)  # trainer yaml over dataset yaml
    assert cfg.SEED == 9  # CLI flag over both files
    assert cfg.DATASET.NUM_SHOTS == 4  # opts last
    cfg2 = setup_cfg(ds, tr, {"SEED": 9}, ["SEED", "10"])
    assert cfg2.SEED == 10


def test_absent_flag_does_not_override_but_seed_zero_does(tmp_path):
    tr = write(tmp_path, "tr.yaml", "SEED: 5\n")
    assert setup_cfg("", tr, {"SEED": None}).SEED == 5
    assert setup_cfg("", tr, {"SEED": 0}).SEED == 0


def test_unknown_key_names_key_and_file(tmp_path):
    tr = write(tmp_path, "bad.yaml", "OPTIM:\n  LERNING_RATE: 0.1\n")
    with pytest.raises(ConfigError) as e:
        setup_cfg("", tr)
    assert "OPTIM.LERNING_RATE" in str(e.value) and "bad.yaml" in str(e.value)


def test_unknown_key_in_opts():
    with pytest.raises(ConfigError, match="TRAINER.CLIP_ADAPTER.RATIOO"):
        setup_cfg(opts=["TRAINER.CLIP_ADAPTER.RATIOO", "0.2"])


def test_type_mismatch_in_opts_names_key():
    with pytest.raises(ConfigError) as e:
        setup_cfg(opts=["OPTIM.MAX_EPOCH", "lots"])
    assert "OPTIM.MAX_EPOCH" in str(e.value) and "int" in str(e.value)


def test_int_for_float_key_is_accepted():
    cfg = setup_cfg(opts=["TRAINER.CLIP_ADAPTER.RATIO", "0"])
    assert cfg.TRAINER.CLIP_ADAPTER.RATIO == 0.0 and isinstance(cfg.TRAINER.CLIP_ADAPTER.RATIO, float)


def test_odd_opts():
    with pytest.raises(ConfigError, match="odd"):
        setup_cfg(opts=["SEED"])


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        setup_cfg("", str(tmp_path / "nope.yaml"))
    bad = write(tmp_path, "broken.yaml", "OPTIM:\n  LR: [0.1\n")
    with pytest.raises(ConfigError, match="malformed YAML in .*broken.yaml"):
        setup_cfg("", bad)
    notmap = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        setup_cfg("", notmap)
