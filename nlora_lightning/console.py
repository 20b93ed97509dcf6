"""A quiet console for ``nlora``: the run's own lines, warnings a user can act on, one progress bar.

Third-party libraries print notices no user of this command can act on before every run. The
command filters those it knows, by their exact text, and nothing else: an error, a warning of
another kind or a changed notice still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["KNOWN_NOTICES", "NoticeFilter", "quiet_third_party_notices"]

# Lightning's loggers for rank_zero_info (which one a message uses depends on import order).
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
KNOWN_NOTICES = (
    re.compile(r"^💡 Tip: .*litlogger"),  # an advertisement for Lightning's cloud logger, every run
    re.compile(r"^(TPU|HPU) available: False"),  # accelerators this project never uses
)
# torch's pytree deprecation, raised from inside Lightning (not from this project's code).
_LEAFSPEC = r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"


class NoticeFilter(logging.Filter):
    """Drops log records whose message matches a known third-party notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in KNOWN_NOTICES)


_FILTER = NoticeFilter()


def quiet_third_party_notices() -> None:
    """Install the filters (idempotent): Lightning's notices, torch's LeafSpec warning, transformers' loading bars."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=_LEAFSPEC)
    # "Loading weights" bars of a model conversion: one per load, three in the demo before the run starts.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
