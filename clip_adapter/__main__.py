"""``python -m clip_adapter COMMAND ...``: the ``clip-adapter`` command (see clip_adapter/app/commands.py)."""
import sys

from clip_adapter.app.commands import main

sys.exit(main())
