"""``python -m clip_adapter.app.results``."""
import sys

from clip_adapter.app.results.cli import main

sys.exit(main())
