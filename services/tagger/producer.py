"""The tagger's faust producer, idempotent: a batch of tag changes retried by the client is written once.

faust asks aiokafka for an idempotent producer only inside transactions (`exactly_once`), and the
tagger runs at-least-once (services/tagger/app.py): without it, a batch whose acknowledgement was
lost (a broker failing over) is written again by aiokafka's own retry, and consumers see the same
changes twice under new offsets. `_settings_extra` is the hook faust merges last into the
AIOKafkaProducer's options (faust/transport/drivers/aiokafka.py, 0.15.x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import Producer


class TaggerProducer(Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}
