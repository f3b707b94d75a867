"""faust's aiokafka consumer with two changes (pinned: faust-streaming 0.15.3).

1. A cheaper per-message delivery step. faust's delivery loop (`Consumer._drain_messages`) hands every
   fetched message to the conductor inside `Service.wait_first(callback(message), suspend_flow.wait())`:
   four asyncio tasks and an `asyncio.wait` per message, so that a rebalance (which sets
   `suspend_flow`) can interrupt a delivery blocked on a full stream buffer, suspended flow control or
   a full producer buffer. On the tagger's workload that was about a fifth of the worker's CPU
   (benchmarks.kafka: ~142 -> ~111 µs of CPU per event with the delivery awaited directly).
   `_drain_messages` below is faust 0.15.3's (BSD-3-Clause, faust-streaming/faust
   `faust/transport/consumer.py`) with one change: when nothing the delivery could wait on is in the
   way — flow not suspended, flow control active, the conductor's callback lock free, faust's producer
   buffer under its limit and no subscribed channel's queue full — the delivery cannot suspend (the
   conductor then only decodes and `put_nowait`s), so it is awaited directly. Otherwise it goes
   through `wait_first` exactly as upstream. The check and the delivery run without yielding to the
   event loop in between, so nothing can change the answer between them. Off with
   `TAGSTREAM_TAGGER__DIRECT_DELIVERY=false`.

2. Commits that keep up after rebalances. faust commits the highest offset it has seen acknowledged
   contiguously (`_new_offset`, from its list of acknowledged offsets). After a rebalance that list
   can hold the same offset twice (messages buffered before the rebalance and fetched again after
   it), and faust's run detection stops at a repeated number: the committed offset then crawled
   forward a few offsets per commit — thousands behind for an hour in the rebalance test, although
   every message was processed. `_new_offset` below drops the repeats before faust's own computation;
   it cannot commit an offset that was not acknowledged.

3. A bounded wait for the batch in flight. On a rebalance and on stop faust waits in `wait_empty`
   until every message handed to an agent is acknowledged, with no limit: an agent blocked on Kafka
   (a send to a partition whose leader died) held a worker in a rebalance for minutes and made it
   ignore SIGTERM. `wait_empty` below gives up after `revoke_wait_s`: the messages still held are
   left unacknowledged, so their offsets are not committed and they are read again by whoever owns
   the partition next (at-least-once; the effect stays exact, see docs/tagger.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import Service, ServiceT

log = logging.getLogger(__name__)


class TaggerConsumer(AIOKafkaConsumer):
    direct_delivery = True
    """Set per app by subclassing (the transport instantiates the class itself)."""
    revoke_wait_s = 30.0
    """Longest wait in `wait_empty` (set per app like `direct_delivery`)."""

    async def wait_empty(self) -> None:
        try:
            await asyncio.wait_for(super().wait_empty(), self.revoke_wait_s)
        except TimeoutError:
            held = len(self._unacked_messages)
            log.warning(
                "%d messages still unacknowledged after %.0fs (TAGSTREAM_TAGGER__REVOKE_WAIT_S): going on without "
                "them; they are not committed and will be read again",
                held,
                self.revoke_wait_s,
            )
            self._unacked_messages.clear()

    def _new_offset(self, tp: TP) -> int | None:
        with ack_lock:  # the lock faust's `ack` holds while it appends to these
            acked = self._acked[tp]
            if len(acked) > 1:
                distinct = sorted(set(acked))
                if len(distinct) != len(acked):
                    acked[:] = distinct
            offset: int | None = super()._new_offset(tp)
            return offset

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        deliverable_now = _deliverable_now(self) if self.direct_delivery else _never

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

                # Sleeping because sometimes getmany is called in a loop never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if deliverable_now():
                                await callback(message)  # cannot suspend: see the module's docstring
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


def _never() -> bool:
    return False


def _deliverable_now(consumer: Any) -> Callable[[], bool]:
    """A check that the conductor's delivery of the next message cannot wait on anything.

    What `Conductor.on_message` and the per-partition handler (`ConductorCompiler.build`) may wait on:
    the callback lock (held while the subscriptions are rebuilt), flow control (suspended during a
    rebalance), faust's producer buffer (over `max_messages`), and a channel queue that is full. The
    rebalance's `suspend_flow` is checked too, as upstream's `wait_first` would return on it.
    """
    app = consumer.app
    conductor = app.topics
    suspend_flow = consumer.suspend_flow
    flow_control = app.flow_control
    lock = conductor._tp_to_callback_lock
    channels = conductor._topics  # the live set of subscribed channels
    buffer = app.producer.buffer

    def deliverable_now() -> bool:
        return (
            not suspend_flow.is_set()
            and flow_control.is_active()
            and not lock.locked()
            and buffer.size <= buffer.max_messages
            and not any(channel.queue.full() for channel in channels)
        )

    return deliverable_now
