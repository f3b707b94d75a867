"""`tagstream tags apply`: bring the tag definitions in line with a rules file (GitOps).

It talks to Kafka directly, with the same planning and validation as the API (catalog.apply_file,
RuleBook.compile): a pipeline needs only the broker, not a running ingest service and an admin key.
Run one apply at a time (the pipeline serialises them); it does not lock against concurrent API edits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from schemas.queries import PreviewTally
from schemas.tags import TagGroup
from services.ingest import catalog
from services.ingest.kafka import KafkaDefinitions, KafkaPublisher
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import Record, TaggerUnavailable
from services.ingest.tagger_state import KafkaTaggerState
from services.runtime.clock import Clock
from services.runtime.definitions import parse_groups
from services.runtime.definitions_feed import definition_record, deletion_record
from services.runtime.settings import Settings
from services.runtime.zone import day_zone


@dataclass(frozen=True)
class Applied:
    plan: catalog.Plan
    published: int
    """Records written to the definitions topic (0 on a dry run or when nothing changed)."""
    impact: PreviewTally | None = None
    """A dry run's preview: who would gain and lose each tag (None when not asked for or not needed)."""
    impact_unavailable: str = ""
    """Why a dry run has no preview (the tagger workers did not answer for every partition)."""


async def apply_rules(
    settings: Settings,
    text: str,
    source: str,
    clock: Clock,
    *,
    dry_run: bool,
    prune: bool,
    timeout_s: float = 60.0,
    impact: bool = True,
) -> Applied:
    """Plan (and unless `dry_run`, publish) the changes. Raises RulesFileError or catalog.CatalogError.

    A dry run with `impact` also asks the tagger workers who would gain and lose each tag (the preview
    of docs/tagger.md, over tagstream.tagger-queries), waiting up to TAGSTREAM_INGEST__PREVIEW_TIMEOUT_S."""
    wanted = parse_groups(text, source)
    limits = catalog.Limits.at(
        clock.now(), horizon_days=settings.tagger.horizon_days, zone=day_zone(settings.shop.timezone)
    )
    topics = settings.topics
    publisher = KafkaPublisher(
        settings.kafka,
        settings.ingest,
        IngestMetrics(CollectorRegistry()),
        topics=[topics.tag_definitions],
        compacted=[topics.tag_definitions],
    )
    await publisher.start()
    definitions = KafkaDefinitions(settings.kafka, topics.tag_definitions)
    try:
        await asyncio.wait_for(publisher.wait_ready(), timeout_s)
        await definitions.start()
        await asyncio.wait_for(definitions.wait_ready(), timeout_s)
        current = definitions.groups()
        plan = catalog.apply_file(current, wanted, limits, prune=prune)
        if dry_run and impact and not plan.change.empty:
            return await _previewed(settings, clock, plan, current)
        if dry_run or plan.change.empty:
            return Applied(plan, 0)
        records: list[Record] = [definition_record(group) for group in plan.change.upserts]
        records += [deletion_record(group_id) for group_id in plan.change.deletions]
        await publisher.send(topics.tag_definitions, records)
        return Applied(plan, len(records))
    finally:
        await definitions.stop()
        await publisher.stop()


async def _previewed(settings: Settings, clock: Clock, plan: catalog.Plan, current: Mapping[str, TagGroup]) -> Applied:
    drafted = {**current, **{group.id: group for group in plan.change.upserts}}
    for group_id in plan.change.deletions:
        drafted.pop(group_id, None)
    tagger = KafkaTaggerState(settings, clock)
    await tagger.start()
    try:
        return Applied(plan, 0, impact=await tagger.preview(list(drafted.values()), sample=3))
    except TaggerUnavailable as error:
        return Applied(plan, 0, impact_unavailable=str(error))
    finally:
        await tagger.stop()
