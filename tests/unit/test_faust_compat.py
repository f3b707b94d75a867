"""The fence around faust's private API holds: the faust installed is the one services/tagger/faust_compat.py
was written against, and nothing else in the tree reaches into faust's private names."""

from __future__ import annotations

import re
from pathlib import Path

import faust
import faust.transport
import pytest

from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.faust_app import faust_app
from services.tagger.faust_compat import (
    FAUST_VERSION,
    PINS,
    TRANSPORT_SCHEME,
    Delivery,
    Pin,
    TaggerConsumer,
    TaggerProducer,
    TaggerTransport,
    source_digest,
)

ROOT = Path(__file__).resolve().parents[2]
FENCE = ROOT / "services" / "tagger" / "faust_compat.py"
PRIVATE_FAUST = re.compile(
    r"_current_event|_ensure_producer|set_persisted_offset|_settings_extra|_drain_messages|_new_offset"
    r"|_tp_to_callback_lock|_read_offset|_commit_every|_n_acked|_add_gap|_unacked_messages|\b_acked\b"
    r"|\._stopped\b|\.noack_take\b|\btable\.data\b|\.data\[|transport\.(Consumer|Producer)\s*=|_db_for_partition"
)
"""faust's private names the tagger uses (and ways of patching a live app); only the fence may say them."""
IMPORTS_FAUST = re.compile(r"^\s*(import faust|from faust\b)", re.MULTILINE)


def test_the_installed_faust_is_the_version_the_compat_module_was_written_against() -> None:
    assert faust.__version__ == FAUST_VERSION, (
        f"faust-streaming {faust.__version__} is installed, but services/tagger/faust_compat.py was written against "
        f"{FAUST_VERSION}: re-check every entry of its PINS (this file's other test names each one that changed), "
        "then update FAUST_VERSION and the pin in pyproject.toml"
    )


@pytest.mark.parametrize("pin", PINS, ids=[pin.target for pin in PINS])
def test_faust_source_the_tagger_copies_overrides_or_relies_on_is_unchanged(pin: Pin) -> None:
    found = source_digest(pin.target)
    assert found == pin.sha256, (
        f"faust's {pin.target} is not the source services/tagger/faust_compat.py was written against "
        f"(sha256 {pin.sha256[:12]}…, installed {found[:12]}…). Re-check: {pin.recheck}. Then set its sha256 to "
        f"{found} and run the tagger's integration, crash and rebalance tests."
    )


def test_no_module_outside_the_fence_touches_faust_private_names() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("services", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != FENCE and IMPORTS_FAUST.search(path.read_text())
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE_FAUST.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == [], "faust's private API is used outside services/tagger/faust_compat.py:\n" + "\n".join(
        offenders
    )


def test_the_tagger_transport_is_found_by_its_url_scheme_as_faust_finds_any_transport() -> None:
    assert faust.transport.by_url(f"{TRANSPORT_SCHEME}://127.0.0.1:9092") is TaggerTransport
    assert TaggerTransport.Consumer is TaggerConsumer
    assert TaggerTransport.Producer is TaggerProducer


def test_the_tagger_app_creates_its_consumer_and_producer_through_its_transport_with_the_settings_options(
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9092, 127.0.0.1:9093"),
        tagger=TaggerSettings(datadir=tmp_path / "tagger", direct_delivery=False, revoke_wait_s=7.0),
    )
    app = faust_app(settings)
    assert [str(url) for url in app.conf.broker] == [
        f"{TRANSPORT_SCHEME}://127.0.0.1:9092",
        f"{TRANSPORT_SCHEME}://127.0.0.1:9093",
    ]
    assert type(app.consumer) is TaggerConsumer  # built, not started: nothing connects
    assert type(app.producer) is TaggerProducer
    assert app.delivery == Delivery(direct=False, revoke_wait_s=7.0)


def test_the_tagger_consumer_refuses_an_app_that_carries_no_delivery_options() -> None:
    app = faust.App("not-the-tagger", broker=f"{TRANSPORT_SCHEME}://127.0.0.1:9092")
    consumer = app.consumer
    assert type(consumer) is TaggerConsumer
    with pytest.raises(TypeError, match="serves the tagger's app only"):
        consumer._delivery()
