"""The faust floor: a faust worker that forwards each event to another topic and does nothing else.

    python -m benchmarks.faust_passthrough BOOTSTRAP APP_ID SOURCE SINK DATADIR

`benchmarks.kafka` runs it as a third row beside the aiokafka passthrough and the tagger. It is the
tagger with the engine and the state taken out and everything else kept: the same faust settings
(acks=all, at-least-once, commit interval, stream buffer), the same consumer (`TaggerConsumer`,
direct delivery), the same batches (`noack_take`, acknowledged after the batch's sends are acked)
and the same record-batch sender. What it costs per event is what any faust-based worker pays
before doing any work of its own.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer

from services.runtime.kafka import send_keyed
from services.runtime.settings import TaggerSettings
from services.tagger.consumer import TaggerConsumer

_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def build_app(bootstrap: str, app_id: str, source: str, sink: str, datadir: str) -> faust.App:
    tagger = TaggerSettings()
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=tagger.stream_buffer,
        topic_allow_declare=False,
    )
    cast(Any, app.transport).Consumer = type("Consumer", (TaggerConsumer,), {"direct_delivery": tagger.direct_delivery})
    out = app.topic(sink, **_RAW)

    @app.agent(app.topic(source, **_RAW), concurrency=1, name="bench.forward")
    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for events in cast(Any, stream).noack_take(tagger.batch_size, within=tagger.batch_within_s):
            producer: AIOKafkaProducer = app.producer._ensure_producer()  # type: ignore[attr-defined]
            partitioner = app.producer.partitioner
            assert partitioner is not None
            messages = [(event.message.key, event.message.value) for event in events]
            await asyncio.gather(*await send_keyed(producer, partitioner, out.get_topic_name(), messages))
            for event in events:
                await stream.ack(event)

    return app


def main(argv: list[str]) -> int:
    bootstrap, app_id, source, sink, datadir = argv
    app = build_app(bootstrap, app_id, source, sink, datadir)
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
