"""One logging path: isam2 messages go through `logging`, on rank zero only unless they are one rank's."""

from __future__ import annotations

import logging

from isam2.logs import get_logger


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "isam2.test_logs"]


def test_rank_zero_speaks_and_other_ranks_stay_quiet(caplog, monkeypatch):
    log = get_logger("isam2.test_logs")
    with caplog.at_level(logging.INFO):
        log.warning("said once")
        monkeypatch.setenv("RANK", "1")
        log.warning("said by every rank")
        log.warning("about this rank", rank_zero_only=False)
    assert _messages(caplog) == ["said once", "[rank 1] about this rank"]


def test_levels_and_arguments_pass_through(caplog):
    log = get_logger("isam2.test_logs")
    with caplog.at_level(logging.WARNING):
        log.info("below the level")
        log.warning("%d masklets", 3)
    assert _messages(caplog) == ["3 masklets"]
    assert caplog.records[-1].levelname == "WARNING"
    # the caller's line, not the adapter's, is on the record
    assert caplog.records[-1].filename == "test_logs.py"
