"""The Redis read model of tag changes: its key layout and the reads the HTTP API serves.

`Projector` (services/tagger/projector.py) writes it from `tagstream.tag-changes`; everything here
only reads, so the ingest service and the notifier can use it without the write side. Redis is a
projection: drop the keys under a prefix and replay the topic to rebuild it.

Key layout (prefix `ts:` by default; `{...}` around a customer id is a Redis Cluster hash tag).
Layout 3: per customer one small hash and one history string, tags as bitmaps over dense customer
ids (docs/performance.md has the bytes per customer); the meta's `layout` field names it, and a read
model in any other layout is refused by readers and rebuilt by the projector, never misread.

    ts:r:{<customer>}            hash    seq -> last applied seq; id -> dense id (once tagged);
                                         lo / ls -> last order / last seen (epoch µs);
                                         t:<group>/<tag> -> added µs, source, group version packed
                                         in one integer (held_value)
                                         (a few dozen short fields: Redis keeps it as one listpack)
    ts:h:{<customer>}            string  the customer's last tag changes: their count, then each
                                         entry behind its length, oldest first, the oldest cut past
                                         the limit; each packed (history_codec.py: ~9 bytes a change
                                         of the benchmarks' workload with its frame, instead of ~420
                                         of JSON; format 1 entries stay readable)
    ts:heads                     hash    head number -> head (history_codec.py), numbered from 1;
                                         gen -> the table's generation (a random token)
    ts:heads:numbers             hash    head -> its number; at most MAX_HEADS heads, never given back
    ts:c:{<customer>}:messages   zset    NotificationOutcome JSON by decided_at (µs), the newest kept
    ts:b:<group>/<tag>           string  bitmap: bit <dense id> set while the customer holds the tag
    ts:ids:next                  string  how many dense ids were given (INCR)
    ts:ids:<n>                   hash    dense id % 128 -> customer id, for ids n*128 .. n*128+127
    ts:stats:tag-members         hash    group/tag -> customers holding the tag
    ts:daily:<group>/<tag>       hash    local epoch day -> net change of holders that day; "base" -> the
                                         sum of the days folded away (see "Daily counts")
    ts:stats:group-members       hash    group -> customers holding any tag of it
    ts:stats:gaps                string  how many seq gaps were seen
    ts:gaps                      set     customers whose stream had a gap
    ts:meta:readmodel            hash    state (rebuilding|ready|resetting), layout, epoch, started_ms,
                                         ready_ms, reason, target:<topic>:<partition> -> offset a rebuild
                                         must reach
    ts:meta:offsets              hash    <topic>:<partition> -> next offset to apply (tag-changes, events)

The head table is kept by a reset (like dense ids), so entries written before it still name the
same heads; a Redis that lost its data starts a table of a new generation, and a projector holding
numbers of the old one finds out before writing (projector_scripts.py).

Dense ids are never given back: a customer keeps its id while it holds no tag, and a reset
(`tagstream readmodel rebuild`) keeps the ids and their buckets, so an audience snapshot taken
before it (a running campaign's) still names the same customers after it.

The read model holds, per partition of tag-changes (and of events, for activity), exactly the fold
of the records before its `ts:meta:offsets` entry: the projector applies a batch only when it starts
at or before that offset (projector.py), so Redis and its position cannot drift apart. A Redis that
lost its data has lost the marker `ts:meta:readmodel` with it: readers then answer "unavailable"
(`ReadModel.status`) until the projector has rebuilt it from the topics (projection.py).

Daily counts: every change that really moves a tag's member set adds +1 or -1 to the field of its
local day (the shop's zone; a change's `occurred_at` is the tagger's clock, so history loaded late
counts on the day it was loaded). How many held the tag at the end of day D is the base plus every
day up to D: a sum of per-change deltas, so it is the same whatever order the partitions are
replayed in (a rebuild) and always ends at the member set's size. Days older than the newest day
minus DAILY_KEEP_DAYS are folded into the base once the hash holds more than twice that many days,
so a tag's hash stays under 2 * DAILY_KEEP_DAYS + 2 fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.client import NEVER_DECODE

from schemas.notifications import NotificationOutcome
from schemas.tags import ChangeSource, TagChanged
from services.engine.timeutil import from_us, to_us
from services.runtime.bitmaps import customer_ids, set_bits
from services.runtime.history_codec import head_number, history_entries, unpack_change

DEFAULT_PREFIX = "ts:"
LAYOUT = "3"
"""The key layout this code reads and writes (the meta's `layout` field)."""
SEQ_FIELD = "seq"
ID_FIELD = "id"
LAST_ORDER_FIELD = "lo"
LAST_SEEN_FIELD = "ls"
TAG_PREFIX = "t:"
DAILY_KEEP_DAYS = 90
"""Days of tag-count history a reader can ask for."""
DAILY_BASE_FIELD = "base"
HEADS_GENERATION_FIELD = "gen"
MAX_HEADS = 65_536
"""Heads the table keeps: a shop's rules give a few hundred (every tag's reasons, per source and
group version); past this, entries carry their head (readmodel layout above)."""
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Keys:
    """Names of every key under one prefix. A customer's keys share the hash tag `{<customer_id>}`.

    A customer id may itself contain braces; the hash tag then ends at its first `}`, which is still
    the same for all of that customer's keys, and no suffix contains `}`, so names stay distinct.
    """

    prefix: str = DEFAULT_PREFIX

    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}r:{{{customer_id}}}"

    def history(self, customer_id: str) -> str:
        return f"{self.prefix}h:{{{customer_id}}}"

    def messages(self, customer_id: str) -> str:
        return f"{self.prefix}c:{{{customer_id}}}:messages"

    def bitmap(self, group_id: str, tag_id: str) -> str:
        return f"{self.prefix}b:{tag_field(group_id, tag_id)}"

    def id_bucket(self, bucket: int) -> str:
        return f"{self.prefix}ids:{bucket}"

    @property
    def id_buckets(self) -> str:
        """The prefix of every bucket's name (the projector's scripts append the number)."""
        return f"{self.prefix}ids:"

    @property
    def next_id(self) -> str:
        return f"{self.prefix}ids:next"

    @property
    def heads(self) -> str:
        return f"{self.prefix}heads"

    @property
    def head_numbers(self) -> str:
        return f"{self.prefix}heads:numbers"

    def daily(self, group_id: str, tag_id: str) -> str:
        return f"{self.prefix}daily:{tag_field(group_id, tag_id)}"

    @property
    def tag_members(self) -> str:
        return f"{self.prefix}stats:tag-members"

    @property
    def group_members(self) -> str:
        return f"{self.prefix}stats:group-members"

    @property
    def gap_count(self) -> str:
        return f"{self.prefix}stats:gaps"

    @property
    def gap_customers(self) -> str:
        return f"{self.prefix}gaps"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta:readmodel"

    @property
    def offsets(self) -> str:
        return f"{self.prefix}meta:offsets"


def tag_field(group_id: str, tag_id: str) -> str:
    """`group/tag`: group and tag ids never contain `/` (schemas.common.Identifier)."""
    return f"{group_id}/{tag_id}"


_SOURCES: tuple[ChangeSource, ...] = ("rule", "manual", "rule_change", "time", "import")
"""A source's code in a packed held value is its index here: append only."""
_SOURCE_CODES: dict[str, int] = {source: code for code, source in enumerate(_SOURCES)}
_VERSION_BITS, _SOURCE_BITS = 8, 3
_PACKED_US = 1 << (63 - _VERSION_BITS - _SOURCE_BITS)
"""Instants packed: from 1970 to 2112 (µs below 2**52), so the value stays a positive int64."""


def held_value(added_us: int, source: str, group_version: int) -> str:
    """A held tag's field value: `(added µs << 11) | (group version << 3) | source code` in decimal,
    which Redis keeps in its listpack as an 8-byte integer (10 bytes with its framing, where the text
    `<added µs> <source> <group version>` takes 25). Versions past 255 and instants outside 1970–2112
    are kept as that text, with commas for spaces (the projector's script takes the value as one word)."""
    code = _SOURCE_CODES[source]
    if 0 <= added_us < _PACKED_US and 0 <= group_version < 1 << _VERSION_BITS:
        return str(((added_us << _VERSION_BITS | group_version) << _SOURCE_BITS) | code)
    return f"{added_us},{source},{group_version}"


@dataclass(frozen=True, slots=True)
class HeldTag:
    added_at: datetime
    source: ChangeSource
    group_version: int

    def packed(self) -> str:
        return held_value(to_us(self.added_at), self.source, self.group_version)

    @classmethod
    def unpacked(cls, value: bytes | str) -> HeldTag:
        text = _text(value)
        if "," in text:
            added, source, version = text.split(",")
            return cls(from_us(int(added)), cast(ChangeSource, source), int(version))
        packed = int(text)
        return cls(
            added_at=from_us(packed >> (_SOURCE_BITS + _VERSION_BITS)),
            source=_SOURCES[packed & (1 << _SOURCE_BITS) - 1],
            group_version=packed >> _SOURCE_BITS & (1 << _VERSION_BITS) - 1,
        )


@dataclass(frozen=True, slots=True)
class Activity:
    last_order_at: datetime | None
    last_seen_at: datetime | None

    @property
    def latest(self) -> datetime | None:
        """The later of the last order and the last event of any kind (a "returned" customer's mark)."""
        moments = [moment for moment in (self.last_order_at, self.last_seen_at) if moment is not None]
        return max(moments, default=None)


State = Literal["missing", "outdated", "resetting", "rebuilding", "ready"]


def offset_field(topic: str, partition: int) -> str:
    """`<topic>:<partition>`, the field of a partition in `ts:meta:offsets` (and, prefixed `target:`, in the meta)."""
    return f"{topic}:{partition}"


@dataclass(frozen=True, slots=True)
class ReadModelStatus:
    """The marker and the projector's positions: is the read model whole, and how far is a rebuild."""

    state: State
    epoch: str | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    targets: dict[str, int] | None = None
    offsets: dict[str, int] | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def total(self) -> int:
        """Records a rebuild reads: every partition's target."""
        return sum((self.targets or {}).values())

    @property
    def remaining(self) -> int:
        """Records still to apply before every partition reaches its target."""
        offsets = self.offsets or {}
        return sum(max(0, target - offsets.get(field, 0)) for field, target in (self.targets or {}).items())

    @property
    def reason(self) -> str | None:
        """Why reads are refused now; None when the read model is whole."""
        if self.state == "ready":
            return None
        if self.state == "missing":
            return (
                "the read model is missing (Redis lost its data, or it was never built); the projector "
                "rebuilds it from tagstream.tag-changes"
            )
        if self.state == "outdated":
            return (
                f"the read model in Redis has another key layout than this version's ({LAYOUT}); the projector "
                "rebuilds it from tagstream.tag-changes"
            )
        if self.state == "resetting":
            return "the read model is being reset by `tagstream readmodel rebuild`"
        done = self.total - self.remaining
        return f"the read model is rebuilding from tagstream.tag-changes: {done} of {self.total} records applied"


@dataclass(frozen=True, slots=True)
class DailyDeltas:
    """A tag's daily counts as stored: the base (days folded away) and the net change per local day."""

    base: int
    days: dict[int, int]

    def counts(self, first: date, last: date) -> list[tuple[date, int]]:
        """How many held the tag at the end of each local day from `first` to `last`, in order."""
        first_day, last_day = (first - _EPOCH).days, (last - _EPOCH).days
        running = self.base + sum(delta for day, delta in self.days.items() if day < first_day)
        counts = []
        for day in range(first_day, last_day + 1):
            running += self.days.get(day, 0)
            counts.append((_EPOCH + timedelta(days=day), running))
        return counts


@dataclass(frozen=True, slots=True)
class TagCount:
    holders: int
    """Customers holding the tag now (the member set's size)."""
    daily: DailyDeltas


class ReadModelUnavailable(Exception):
    """The read model is not whole (missing or rebuilding); the message says why."""


class ReadModel:
    """Reads over the projection. Works with clients built with or without `decode_responses`."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self.keys = Keys(key_prefix)

    async def status(self) -> ReadModelStatus:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.meta)
            pipe.hgetall(self.keys.offsets)
            meta_raw, offsets_raw = await pipe.execute()
        return parse_status(meta_raw, offsets_raw)

    async def unavailable(self) -> str | None:
        """Why reads cannot be trusted now (missing or rebuilding read model); None when they can."""
        return (await self.status()).reason

    async def current_tags(self, customer_id: str) -> dict[str, list[str]]:
        """Tag ids per group, each list sorted (display order belongs to the definitions)."""
        return {group_id: sorted(tags) for group_id, tags in sorted((await self.held_tags(customer_id)).items())}

    async def held_tags(self, customer_id: str) -> dict[str, dict[str, HeldTag]]:
        """Like `current_tags`, with when, how and under which group version each tag was added."""
        grouped: dict[str, dict[str, HeldTag]] = {}
        for raw, value in (await self._redis.hgetall(self.keys.customer(customer_id))).items():
            field = _text(raw)
            if field.startswith(TAG_PREFIX):
                group_id, tag_id = field[len(TAG_PREFIX) :].split("/", 1)
                grouped.setdefault(group_id, {})[tag_id] = HeldTag.unpacked(value)
        return grouped

    async def history(self, customer_id: str, offset: int = 0, limit: int = 50) -> list[TagChanged]:
        """The customer's tag changes, newest first; only the last `history_limit` are kept (the whole
        history is on tagstream.tag-changes)."""
        if offset < 0 or limit < 1:
            raise ValueError(f"history needs offset >= 0 and limit >= 1, got offset={offset} limit={limit}")
        key = self.keys.history(customer_id)
        # Packed entries are binary: read undecoded whatever the client's decode_responses.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("GET", key, **{NEVER_DECODE: True})
            pipe.hget(self.keys.heads, HEADS_GENERATION_FIELD)
            raw, generation = await pipe.execute()
        entries = [] if raw is None else history_entries(customer_id, bytes(raw))[offset : offset + limit]
        heads = await self._heads(entries, generation)
        return [unpack_change(customer_id, entry, heads) for entry in entries]

    async def _heads(self, entries: list[bytes], generation: Any) -> dict[int, bytes]:
        """The heads the entries name, from the table of the generation they were read under (a Redis
        that lost its data and numbered heads anew between the two reads would misname them)."""
        numbers = sorted({number for entry in entries if (number := head_number(entry)) is not None})
        if not numbers:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("HMGET", self.keys.heads, *numbers, **{NEVER_DECODE: True})
            pipe.hget(self.keys.heads, HEADS_GENERATION_FIELD)
            found, now = await pipe.execute()
        if now != generation:
            raise ReadModelUnavailable("the read model's head table was renewed during the read (Redis lost its data)")
        return {number: bytes(head) for number, head in zip(numbers, found, strict=True) if head is not None}

    async def messages(self, customer_id: str, offset: int, limit: int) -> list[NotificationOutcome]:
        """The notifier's decisions about the customer, newest first (the last `history_limit` kept)."""
        if offset < 0 or limit < 1:
            raise ValueError(f"messages needs offset >= 0 and limit >= 1, got offset={offset} limit={limit}")
        entries = await self._redis.zrevrange(self.keys.messages(customer_id), offset, offset + limit - 1)
        return [NotificationOutcome.model_validate_json(cast(bytes | str, entry)) for entry in entries]

    async def last_seq(self, customer_id: str) -> int:
        """The seq of the last change applied for the customer; 0 when none was."""
        value = await self._redis.hget(self.keys.customer(customer_id), SEQ_FIELD)
        return 0 if value is None else int(value)

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        """Whether the customer holds the tag; None when no change of theirs was ever applied."""
        seq, held = await self._redis.hmget(
            self.keys.customer(customer_id), [SEQ_FIELD, TAG_PREFIX + tag_field(group_id, tag_id)]
        )
        return None if seq is None else held is not None

    async def members(self, group_id: str, tag_id: str) -> AsyncIterator[str]:
        """Customers holding the tag, in dense-id order, read in bounded slices (bitmaps.py); a
        customer who joins or leaves meanwhile may or may not be seen."""
        async for ids in set_bits(self._redis, self.keys.bitmap(group_id, tag_id)):
            for customer_id in await self.name(ids):
                yield customer_id

    async def name(self, ids: Sequence[int]) -> list[str]:
        """The customers behind dense ids (from a tag bitmap or an audience snapshot), in order."""
        return await customer_ids(self._redis, self.keys.id_bucket, ids)

    async def customers(self, *, batch: int = 1000) -> AsyncIterator[str]:
        """Every customer with a change applied (SCAN: one may come twice while keys change)."""
        head = f"{self.keys.prefix}r:{{"
        found: list[str] = []
        async for key in self._redis.scan_iter(match=f"{_glob_escape(head)}*", count=batch):
            found.append(_text(key))
            if len(found) >= batch:
                for customer_id in await self._with_seq(head, found):
                    yield customer_id
                found = []
        for customer_id in await self._with_seq(head, found):
            yield customer_id

    async def _with_seq(self, head: str, keys: list[str]) -> list[str]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hexists(key, SEQ_FIELD)
            known = await pipe.execute()
        return [key[len(head) : -1] for key, seq in zip(keys, known, strict=True) if seq and key.endswith("}")]

    async def member_count(self, group_id: str, tag_id: str) -> int:
        value = await self._redis.hget(self.keys.tag_members, tag_field(group_id, tag_id))
        return 0 if value is None else int(value)

    async def tag_counts(self, tags: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TagCount]:
        """Holders now and the daily deltas of each (group, tag), over one round trip."""
        if not tags:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.tag_members, [tag_field(group_id, tag_id) for group_id, tag_id in tags])
            for group_id, tag_id in tags:
                pipe.hgetall(self.keys.daily(group_id, tag_id))
            holders, *dailies = await pipe.execute()
        counts = {}
        for tag, held, stored in zip(tags, holders, dailies, strict=True):
            fields = {_text(field): int(value) for field, value in stored.items()}
            base = fields.pop(DAILY_BASE_FIELD, 0)
            days = {int(day): n for day, n in fields.items()}
            counts[tag] = TagCount(0 if held is None else int(held), DailyDeltas(base, days))
        return counts

    async def group_member_count(self, group_id: str) -> int:
        """Customers holding at least one tag of the group."""
        value = await self._redis.hget(self.keys.group_members, group_id)
        return 0 if value is None else int(value)

    async def activity(self, customer_id: str) -> Activity | None:
        last_order, last_seen = await self._redis.hmget(
            self.keys.customer(customer_id), [LAST_ORDER_FIELD, LAST_SEEN_FIELD]
        )
        if last_order is None and last_seen is None:
            return None
        return Activity(
            last_order_at=None if last_order is None else from_us(int(last_order)),
            last_seen_at=None if last_seen is None else from_us(int(last_seen)),
        )

    async def gaps(self) -> int:
        """How many times a customer's seq jumped by more than one (changes lost upstream or skipped)."""
        value = await self._redis.get(self.keys.gap_count)
        return 0 if value is None else int(value)

    async def customers_with_gaps(self) -> AsyncIterator[str]:
        async for member in self._redis.sscan_iter(self.keys.gap_customers):
            yield _text(member)


def parse_status(meta_raw: dict[Any, Any], offsets_raw: dict[Any, Any]) -> ReadModelStatus:
    meta = {_text(field): _text(value) for field, value in meta_raw.items()}
    state = meta.get("state")
    if state not in ("resetting", "rebuilding", "ready"):
        return ReadModelStatus("missing", offsets={_text(f): int(v) for f, v in offsets_raw.items()})
    if meta.get("layout") != LAYOUT:
        return ReadModelStatus("outdated", epoch=meta.get("epoch"))
    return ReadModelStatus(
        cast(State, state),
        epoch=meta.get("epoch"),
        started_at=_ms_instant(meta.get("started_ms")),
        ready_at=_ms_instant(meta.get("ready_ms")),
        targets={field[len("target:") :]: int(value) for field, value in meta.items() if field.startswith("target:")},
        offsets={_text(field): int(value) for field, value in offsets_raw.items()},
    )


def _ms_instant(ms: str | None) -> datetime | None:
    return None if not ms else from_us(int(ms) * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
