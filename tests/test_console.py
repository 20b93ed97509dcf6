"""Issue 24 item 6: known third-party notices are filtered from the console, nothing else is."""

import logging
import warnings

from nlora_lightning.console import NoticeFilter, quiet_third_party_notices


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("lightning.pytorch.utilities.rank_zero", level, __file__, 1, message, None, None)


def test_known_notices_are_dropped_and_everything_else_kept():
    keep = NoticeFilter().filter
    assert not keep(record("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://...)"))
    assert not keep(record("TPU available: False, using: 0 TPU cores"))
    assert keep(record("GPU available: True (cuda), used: True"))
    assert keep(record("TPU available: True, using: 8 TPU cores"))
    assert keep(record("Restoring states from the checkpoint path at last.ckpt"))
    assert keep(record("some error", logging.ERROR))


def test_quiet_console_filters_lightning_logs_torch_leafspec_warning_and_loading_bars(caplog):
    from transformers.utils import logging as transformers_logging

    quiet_third_party_notices()
    quiet_third_party_notices()  # idempotent
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, NoticeFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)")
        logger.info("Seed set to 0")
    assert [r.getMessage() for r in caplog.records] == ["Seed set to 0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party_notices()  # its filter goes in front of the 'default' one
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead.")
        warnings.warn("a warning the user can act on")
    assert [str(w.message) for w in caught] == ["a warning the user can act on"]
    assert not transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
