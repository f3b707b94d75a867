"""The tagger's `faust.Worker`: faust's own logging set-up, then repeated records held back."""

from __future__ import annotations

import logging

import faust

from services.runtime.logs import hold_back_repeats


class TaggerWorker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level:
            # faust lowers the root logger to DEBUG at WARNING and above, for its start-up spinner to turn
            # on every record; then every debug call of aiokafka (per send, per response) builds a record
            # that no handler shows
            logger.setLevel(level)
        hold_back_repeats(logger)  # a broker outage: ~100 identical aiokafka ERROR lines a second
