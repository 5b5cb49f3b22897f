"""``python -m clip_adapter.app.sweep`` (same as ``clip-adapter sweep``)."""
import sys

from clip_adapter.app.sweep.cli import main

sys.exit(main())
