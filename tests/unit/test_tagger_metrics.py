"""The tagger's change-latency histogram, filled per batch, exports what per-change observations would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.engine.changes import TagChange
from services.tagger.metrics import _LATENCY_BUCKETS, TaggerMetrics, TalliedHistogram

NAME = "tagstream_event_to_change_seconds"


def change(customer_id: str, tag_id: str, seq: int) -> TagChange:
    return TagChange(customer_id, "value", tag_id, "added", "rule", "", (), 1, f"e-{seq}", 0, seq)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    """(sample name, le) -> value of one histogram, created timestamps left out."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name == name:
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    found[sample.name, sample.labels.get("le", "")] = sample.value
    return found


def test_a_batch_of_changes_exports_the_buckets_sum_and_count_of_one_observation_per_change() -> None:
    acknowledged = 1_767_225_600.0  # 2026-01-01 00:00 UTC, midnight in Shanghai 08:00
    # latencies on a bound (0.05: counted in le="0.05"), between bounds, beyond the last, zero, and
    # negative (a record timestamp ahead of this host's clock: counted as 0)
    latencies = [0.05, 0.05, 0.0375, 0.0004, 45.0, 0.0, -0.2, 0.2, 0.2, 0.2]
    tagged = TaggerMetrics(CollectorRegistry())
    # message n caused n % 3 + 1 changes (the same latency each)
    caused_at = [(acknowledged - latency, n % 3 + 1) for n, latency in enumerate(latencies)]
    changes = [change(f"c{n}", f"t{k % 2}", k) for n, (_, count) in enumerate(caused_at) for k in range(count)]
    split = sum(count for _, count in caused_at[:4])
    tagged.count_changes(changes[:split], caused_at[:4], acknowledged)
    tagged.count_changes(changes[split:], caused_at[4:], acknowledged)  # two batches add up

    plain = CollectorRegistry()
    reference = Histogram(NAME, "per change", registry=plain, buckets=_LATENCY_BUCKETS)
    for produced_at, count in caused_at:
        for _ in range(count):
            reference.observe(max(0.0, acknowledged - produced_at))

    exported = samples(tagged.registry, NAME)
    expected = samples(plain, NAME)
    assert exported.keys() == expected.keys()
    assert {key: pytest.approx(value) for key, value in exported.items()} == expected
    # 0.0004 (message 3: 1 change), 0.0 (5: 3 changes), the negative one (6: 1 change)
    assert exported[f"{NAME}_bucket", "0.025"] == 5
    assert exported[f"{NAME}_count", ""] == len(changes) == 19
    counted = tagged.registry.get_sample_value("tagstream_tag_changes_total", {
        "group": "value", "tag": "t0", "change": "added", "source": "rule"
    })  # fmt: skip
    assert counted == sum((count + 1) // 2 for _, count in caused_at)  # k = 0, 2 of each message


def test_a_value_on_a_bound_counts_in_that_bound_as_prometheus_le_says() -> None:
    histogram = TalliedHistogram("tagstream_x_seconds", "x", CollectorRegistry(), buckets=(0.01, 0.05, 0.1))
    tally = histogram.tally()
    for value in (0.05, 0.0500001, 0.1, 7.0):
        tally.add(value)
    assert tally.counts == [0, 1, 2, 1]


def test_a_batch_without_changes_leaves_the_histogram_at_zero() -> None:
    metrics = TaggerMetrics(CollectorRegistry())
    metrics.count_changes([], [], 1_767_225_600.0)
    assert metrics.registry.get_sample_value(f"{NAME}_count") == 0
    assert metrics.registry.get_sample_value(f"{NAME}_bucket", {"le": "+Inf"}) == 0


def test_bucket_bounds_out_of_order_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="tagstream_x_seconds: bucket bounds must be given ascending"):
        TalliedHistogram("tagstream_x_seconds", "x", CollectorRegistry(), buckets=(0.1, 0.05))


def test_a_second_histogram_of_the_same_name_in_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    TalliedHistogram("tagstream_x_seconds", "x", registry, buckets=(0.1,))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        TalliedHistogram("tagstream_x_seconds", "x", registry, buckets=(0.1,))
