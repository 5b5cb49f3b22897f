"""Registered trainers (installed as ``clip_adapter.trainers``); importing this registers them all."""
from clip_adapter.trainers import zeroshot_clip  # noqa: F401
from clip_adapter.trainers import clip_adapter  # noqa: F401
from clip_adapter.trainers import coop  # noqa: F401
from clip_adapter.trainers import linear_probe  # noqa: F401
from clip_adapter.trainers import cocoop  # noqa: F401
from clip_adapter.trainers import kgcoop  # noqa: F401
from clip_adapter.trainers import prograd  # noqa: F401
from clip_adapter.trainers import maple  # noqa: F401
from clip_adapter.trainers import tip_adapter  # noqa: F401
from clip_adapter.trainers import gda  # noqa: F401
from clip_adapter.trainers import lpp  # noqa: F401
from clip_adapter.trainers import clap  # noqa: F401
from clip_adapter.trainers import taskres  # noqa: F401
