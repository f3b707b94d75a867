"""The sync sink's pure step: which changes go out, given the applied seqs and the definitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from schemas.tags import Reason, TagChanged, TagGroup
from services.cli import main
from services.sync.metrics import SyncMetrics
from services.sync.plan import plan, synced_groups
from services.sync.ports import Applied, Outbound, Rejected, Snapshot
from services.sync.sink import MemoryAppliedSeqs, SyncSink

AT = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # midnight, New Year's Day in Shanghai


def group(group_id: str, *, disabled: bool = False, order: int = 0) -> TagGroup:
    return TagGroup.model_validate(
        {
            "id": group_id,
            "name": f"组 {group_id}",
            "order": order,
            "mode": "multi",
            "tagging": "manual",
            "disabled": disabled,
            "tags": [{"id": "a", "name": "甲"}, {"id": "b", "name": "乙"}],
        }
    )


def changed(customer: str, group_id: str, tag: str, seq: int, kind: str = "added") -> TagChanged:
    return TagChanged(
        customer_id=customer,
        group_id=group_id,
        tag_id=tag,
        change=kind,  # type: ignore[arg-type]
        source="rule",
        reason=Reason(summary="test"),
        group_version=1,
        occurred_at=AT,
        seq=seq,
    )


GROUPS = {"g": group("g"), "off": group("off", disabled=True)}


def test_changes_at_or_below_the_applied_seq_are_skipped_as_duplicates() -> None:
    planned = plan([changed("c1", "g", "a", 3), changed("c1", "g", "b", 4)], {"c1": 3}, GROUPS)
    assert [item.change.seq for item in planned.outbound] == [4]
    assert planned.skipped == {"duplicate": 1}
    assert planned.done == {"c1": 4}


def test_a_change_repeated_within_one_batch_goes_out_once() -> None:
    planned = plan([changed("c1", "g", "a", 1), changed("c1", "g", "a", 1)], {}, GROUPS)
    assert len(planned.outbound) == 1
    assert planned.skipped == {"duplicate": 1}


def test_disabled_and_deleted_groups_are_not_synced_but_their_seqs_count_as_done() -> None:
    planned = plan([changed("c1", "off", "a", 1), changed("c1", "gone", "a", 2)], {}, GROUPS)
    assert planned.outbound == []
    assert planned.skipped == {"disabled": 1, "unknown_group": 1}
    assert planned.done == {"c1": 2}


def test_outbound_changes_carry_the_names_the_shop_gave_the_group_and_tag() -> None:
    [item] = plan([changed("c1", "g", "b", 1)], {}, GROUPS).outbound
    assert (item.group.name, item.tag_name) == ("组 g", "乙")


def test_a_resync_covers_the_enabled_groups_in_display_order() -> None:
    groups = {"z": group("z", order=1), "y": group("y", order=2), "off": group("off", disabled=True, order=0)}
    assert [g.id for g in synced_groups(groups)] == ["z", "y"]


class RecordingAdapter:
    name = "test"

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.applied: list[Outbound] = []
        self.refuse = refuse or set()

    async def apply(self, changes: list[Outbound]) -> Applied:
        self.applied.extend(changes)
        return Applied(
            rejected=[
                Rejected(c.change.customer_id, c.change.seq, "no") for c in changes if c.change.seq in self.refuse
            ]
        )

    async def replace(self, snapshots: list[Snapshot]) -> Applied:
        return Applied()

    async def close(self) -> None:
        return None


async def test_the_sink_records_seqs_after_the_ack_so_a_redelivered_batch_is_skipped() -> None:
    adapter, seqs = RecordingAdapter(refuse={2}), MemoryAppliedSeqs()
    metrics = SyncMetrics(CollectorRegistry(), "test")
    sink = SyncSink(adapter, seqs, lambda: GROUPS, metrics)
    batch = [changed("c1", "g", "a", 1), changed("c1", "g", "b", 2), changed("c2", "off", "a", 1)]
    result = await sink.handle(batch)
    again = await sink.handle(batch)
    assert [r.seq for r in result.rejected] == [2]
    assert again.rejected == []
    assert [c.change.seq for c in adapter.applied] == [1, 2]
    assert seqs.seqs == {"c1": 2, "c2": 1}
    assert metrics.changes.labels("test", "applied")._value.get() == 1
    assert metrics.changes.labels("test", "dead_lettered")._value.get() == 1
    assert metrics.changes.labels("test", "duplicate")._value.get() == 3


def test_sync_commands_refuse_to_start_without_their_adapter_s_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TAGSTREAM_SYNC__ADAPTER", "TAGSTREAM_SYNC__WEBHOOK_URL", "TAGSTREAM_SYNC__WECOM_CORP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["sync", "resync"]) == 2
    assert "TAGSTREAM_SYNC__WEBHOOK_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("TAGSTREAM_SYNC__ADAPTER", "wecom")
    assert main(["sync"]) == 2
    assert "TAGSTREAM_SYNC__WECOM_CORP_ID is not set" in capsys.readouterr().err
