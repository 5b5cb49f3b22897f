"""``python -m clip_adapter.app.doctor``."""
import sys

from clip_adapter.app.doctor.cli import main

sys.exit(main())
