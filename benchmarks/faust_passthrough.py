"""The faust floor: a faust worker that forwards each event to another topic and does nothing else.

    python -m benchmarks.faust_passthrough BOOTSTRAP APP_ID SOURCE SINK PARTITIONS DATADIR WEB_PORT

`benchmarks.kafka` runs it as a floor beside the aiokafka passthrough and the core alone. It is the
tagger with the engine and the state taken out and everything else kept: the tagger's own faust app
(`services.tagger.faust_app.faust_app`: acks=all, at-least-once, commit interval, stream buffer, the
`TaggerConsumer` handing fetched records over in batches; a memory store, as no table is used), the
same batches (`SourceBatches`, positions committed after the batch's sends are acked) and the same
record-batch sender (`send_records`). What it costs per event is what any faust-based worker pays
before doing any work of its own.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

import faust

from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.delivery import Batch, SourceBatches
from services.tagger.faust_app import RAW_TOPIC, faust_app, send_records


def build_app(settings: Settings, source: str, sink: str) -> faust.App:
    """The tagger's own faust app (`faust_app`) and hand-over, with a task that forwards each batch."""
    app = faust_app(settings)
    tagger = settings.tagger
    batches = SourceBatches([source], tagger.stream_buffer)
    app.source_batches = batches
    app.topics.add(app.topic(source, **RAW_TOPIC))

    async def forward(taken: list[Batch]) -> None:
        # the workload's events all have a key and a value
        messages = cast(list[tuple[bytes, bytes]], [(r.key, r.value) for _, records in taken for r in records])
        await asyncio.gather(*await send_records(app, sink, messages))
        batches.stored({tp: records[-1].offset + 1 for tp, records in taken})

    @app.task  # type: ignore[untyped-decorator]
    async def forward_batches() -> None:
        while True:
            await batches.run(forward(await batches.take(tagger.batch_size, tagger.batch_within_s)))

    return app


def main(argv: list[str]) -> int:
    bootstrap, app_id, source, sink, partitions, datadir, web_port = argv
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=int(partitions), replication_factor=1),
        tagger=TaggerSettings(
            app_id=app_id, store="memory", datadir=Path(datadir), web_host="127.0.0.1", web_port=int(web_port)
        ),
    )
    worker = faust.Worker(build_app(settings, source, sink), loglevel="warning", quiet=True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
