"""Finding 8: provider webhooks a receiver can trust, sent only where they were configured to go.

Every request is signed as docs/notifier.md documents (the documented verification snippet itself
checks it here), a redirect is a failure with its reason, never a second POST of the phone number
to wherever it points, and TLS is verified, against a CA given in the settings when there is one.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.notifier.composition import providers_from
from services.notifier.metrics import NotifierMetrics
from services.notifier.ports import Message, Provider
from services.runtime.clock import ManualClock
from services.runtime.resilience import GaveUp
from services.runtime.settings import NotifierSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifier.md"
SECRET = "whsec-test-0123456789abcdef0123456789"
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
MESSAGE = Message(
    idempotency_key="pb:welcome:0:c-上海-1:seq-7",
    channel="sms",
    customer_id="c-上海-1",
    playbook_id="welcome",
    step=0,
    template="hello",
    text="李雷, 欢迎回来",
    coupon=None,
    to="+86 138 0000 0000",
)


def documented_verify() -> Callable[..., bool]:
    """The receiver's `verify` exactly as docs/notifier.md prints it."""
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- verify-snippet:.*?-->\n```python\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/notifier.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)  # our own documentation, run as a reader would
    verify: Callable[..., bool] = namespace["verify"]
    return verify


class Receiver:
    """A provider endpoint: records each request's headers and raw body, answers `status`."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.status, headers=self.headers, text="{}")


@asynccontextmanager
async def serving(receiver: Receiver, tls: Any = None) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/sms", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/sms"
    finally:
        await runner.cleanup()


def sms_provider(url: str, **settings: Any) -> Provider:
    options: dict[str, Any] = {"sms_url": url, "provider_attempts": 2, "backoff_base_s": 0, "backoff_cap_s": 0}
    notifier = NotifierSettings(**(options | settings))
    return providers_from(notifier, NotifierMetrics(CollectorRegistry()), ManualClock(NOW))["sms"]


async def test_every_request_is_signed_over_its_timestamp_and_body_as_documented(tmp_path: Path) -> None:
    secret_file = tmp_path / "signing-secret"
    secret_file.write_text(SECRET + "\n")  # as a mounted Secret often ends
    receiver = Receiver()
    async with serving(receiver) as url:
        provider = sms_provider(url, signing_secret_file=secret_file)
        assert await provider.send(MESSAGE) == 1
        await provider.close()
    [(headers, body)] = receiver.requests
    verify = documented_verify()
    signature = headers["Tagstream-Signature"]
    assert signature.startswith(f"t={int(NOW.timestamp())},v1=")
    assert verify(SECRET.encode(), signature, body, now=NOW.timestamp())
    assert orjson.loads(body)["idempotency_key"] == headers["Idempotency-Key"] == MESSAGE.idempotency_key
    assert not verify(SECRET.encode(), signature, body.replace(b"+86", b"+87"), now=NOW.timestamp())
    assert not verify(b"another-secret-0123456789abcdef0123", signature, body, now=NOW.timestamp())
    assert not verify(SECRET.encode(), signature, body, now=NOW.timestamp() + 301)  # a replay, later


def test_a_provider_url_without_a_signing_secret_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="set signing_secret or signing_secret_file"):
        NotifierSettings(sms_url="https://sms.example.cn/send")


async def test_a_redirect_is_a_failure_naming_it_and_the_message_never_reaches_its_target() -> None:
    elsewhere = Receiver()
    async with serving(elsewhere) as target:
        redirecting = Receiver(status=307, headers={"Location": target.replace("127.0.0.1", "localhost")})
        async with serving(redirecting) as url:
            provider = sms_provider(url, signing_secret=SECRET)
            with pytest.raises(GaveUp) as gave_up:
                await provider.send(MESSAGE)
            await provider.close()
    assert "HTTP 307" in gave_up.value.detail
    assert "redirect to localhost: not followed" in gave_up.value.detail
    assert len(redirecting.requests) == 1  # not retried: the answer would not change
    assert elsewhere.requests == []


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA made for this test and a certificate it signed for 127.0.0.1 (openssl: no new dependency)."""
    where = tmp_path_factory.mktemp("ca")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=where)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=where)
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=where)  # fmt: skip
    return where


def _server_tls(ca: Path) -> Any:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca / "server.pem", ca / "server.key")
    return context


async def test_tls_to_a_provider_is_verified_against_the_configured_ca(private_ca: Path) -> None:
    receiver = Receiver()
    async with serving(receiver, tls=_server_tls(private_ca)) as url:
        trusting = sms_provider(url, signing_secret=SECRET, provider_ca_file=private_ca / "ca.pem")
        assert await trusting.send(MESSAGE) == 1
        await trusting.close()
    assert len(receiver.requests) == 1


async def test_tls_to_a_provider_with_an_unknown_ca_is_refused(private_ca: Path) -> None:
    receiver = Receiver()
    async with serving(receiver, tls=_server_tls(private_ca)) as url:
        system_cas = sms_provider(url, signing_secret=SECRET)
        with pytest.raises(GaveUp, match="Certificate"):
            await system_cas.send(MESSAGE)
        await system_cas.close()
    assert receiver.requests == []
