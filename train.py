#!/usr/bin/env python
"""CoOp-style entry point: ``python train.py --root DATA --trainer CLIP_Adapter ...`` (see clip_adapter/app/train.py)."""
import sys

from clip_adapter.app.train import main

if __name__ == "__main__":
    sys.exit(main())
