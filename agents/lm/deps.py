"""The ``lm`` extra: one place that imports it and says what to install when it is missing."""

from __future__ import annotations

import os
from types import ModuleType

INSTALL_HINT = "the language-model track needs the lm extra: pip install 'prefbench[lm]'"


def transformers() -> ModuleType:
    """The ``transformers`` module.

    Raises:
        ImportError: Naming the extra to install.
    """
    # Nothing is downloaded at run time: a name that is not a local folder fails at once.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers as module
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    # Progress bars and advice lines would fill the logs of every run.
    module.utils.logging.disable_progress_bar()
    module.utils.logging.set_verbosity_error()
    return module


def tokenizers() -> ModuleType:
    """The ``tokenizers`` module.

    Raises:
        ImportError: Naming the extra to install.
    """
    try:
        import tokenizers as module
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return module
