"""The plugin's only hard requirement, checked first: Dassl importable, or one line saying how to get it.

Dassl is published as a git repository only, so no package index can resolve it for
``pip install clip-adapter[dassl]``; that extra brings what Dassl imports at run time and the message
below gives the rest.
"""
from __future__ import annotations

import logging
import os
import warnings

from clip_adapter.errors import UserError

DASSL_GIT = "git+https://github.com/KaiyangZhou/Dassl.pytorch"
# Dassl's setup.py imports numpy (so: present first, build not isolated) and pins old development
# tools in its requirements (so: --no-deps, then this project's ``dassl`` extra for what it imports).
EXTRA_COMMAND = "pip install -e '.[dassl]' (in this repository)"
INSTALL_COMMAND = f"pip install numpy && pip install --no-deps --no-build-isolation '{DASSL_GIT}' && {EXTRA_COMMAND}"


class DasslMissingError(UserError, ImportError):
    """Dassl, or a module Dassl imports at run time, is not installed (a UserError: the CLI prints one line)."""


def require_dassl() -> None:
    """Import the parts of Dassl the plugin uses; raise ``DasslMissingError`` (one line) if they cannot be.

    Importing ``dassl.data`` calls ``logging.disable(logging.WARNING)`` (to quiet WILDS), which would
    silence every INFO line of this project, in log.txt too; the previous setting is put back.
    """
    disabled = logging.root.manager.disable
    # WILDS's helper package ``outdated`` asks PyPI for its latest version on import and warns when
    # that fails (offline machines, clusters): noise in every run's output, so it is silenced here.
    os.environ.setdefault("OUTDATED_IGNORE", "1")
    try:
        with warnings.catch_warnings():
            # WILDS (imported by dassl.data) imports pkg_resources and warns about it: nothing a user can act on
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import dassl.config  # noqa: F401
            import dassl.data.datasets  # noqa: F401
            import dassl.engine  # noqa: F401
            import dassl.optim  # noqa: F401
            import dassl.utils  # noqa: F401
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == "dassl":
            raise DasslMissingError(f"the Dassl plugin mode needs Dassl, which is not installed; install it with: {INSTALL_COMMAND}") from None
        raise DasslMissingError(
            f"Dassl is installed but cannot import {exc.name!r}, which it needs at run time; install it with: {EXTRA_COMMAND}"
        ) from None
    finally:
        if logging.root.manager.disable != disabled:
            logging.disable(disabled)
