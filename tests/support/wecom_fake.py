"""A local fake of the WeCom endpoints the tag sync calls, serving their documented shapes (docs/sync.md).

`gettoken`, `externalcontact/get_corp_tag_list`, `add_corp_tag` and `mark_tag` on 127.0.0.1, with
the faults a real corp meets: tokens that expire mid-run (42001), a frequency limit (45009), and
external contacts WeCom does not know (40096). `marked` is what WeCom would show on each contact.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CORP_ID = "wwfake0123456789ab"
SECRET = "fake-customer-contact-secret"


@dataclass
class WeComFake:
    token_lifetime_s: int = 7200
    expire_token_after_calls: int | None = None
    """Answer 42001 once this many calls used one token (WeCom ending a token early)."""
    rate_limited_calls: int = 0
    """The next this many calls answer 45009."""
    unknown_contacts: set[str] = field(default_factory=set)
    mark_delay_s: float = 0.0
    """How long each mark_tag takes to answer (a slow WeCom, so a crash can land mid-stream)."""
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """group_id -> {"group_name", "order", "tag": [{"id", "name", "order"}]}"""
    marked: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(userid, external_userid) -> corp tag ids"""
    calls: list[str] = field(default_factory=list)
    tokens_issued: int = 0
    port: int = 0
    _token: str = ""
    _token_uses: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    async def start(self) -> WeComFake:
        app = web.Application()
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/externalcontact/get_corp_tag_list", self._get_corp_tag_list)
        app.router.add_post("/cgi-bin/externalcontact/add_corp_tag", self._add_corp_tag)
        app.router.add_post("/cgi-bin/externalcontact/mark_tag", self._mark_tag)
        self._runner, self.port = await _serve(app, self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def expire_token(self) -> None:
        self._token = ""

    def tag_names(self, userid: str, external_userid: str) -> set[tuple[str, str]]:
        """(group name, tag name) of every tag marked on the contact."""
        names = {
            tag["id"]: (group["group_name"], tag["name"]) for group in self.groups.values() for tag in group["tag"]
        }
        return {names[tag_id] for tag_id in self.marked.get((userid, external_userid), set())}

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.calls.append("gettoken")
        if request.query.get("corpid") != CORP_ID or request.query.get("corpsecret") != SECRET:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if not self._token:
            self.tokens_issued += 1
            self._token = f"token-{self.tokens_issued}"
            self._token_uses = 0
        return web.json_response(
            {"errcode": 0, "errmsg": "ok", "access_token": self._token, "expires_in": self.token_lifetime_s}
        )

    async def _checked(self, request: web.Request, name: str) -> dict[str, Any] | web.Response:
        self.calls.append(name)
        if self.rate_limited_calls > 0:
            self.rate_limited_calls -= 1
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        token = request.query.get("access_token", "")
        if not self._token or token != self._token:
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        self._token_uses += 1
        if self.expire_token_after_calls is not None and self._token_uses > self.expire_token_after_calls:
            self._token = ""
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        body: dict[str, Any] = await request.json()
        return body

    async def _get_corp_tag_list(self, request: web.Request) -> web.Response:
        body = await self._checked(request, "get_corp_tag_list")
        if isinstance(body, web.Response):
            return body
        groups = [
            {"group_id": group_id, "create_time": 1557838797, "deleted": False, **group}
            for group_id, group in self.groups.items()
        ]
        return web.json_response({"errcode": 0, "errmsg": "ok", "tag_group": groups})

    async def _add_corp_tag(self, request: web.Request) -> web.Response:
        body = await self._checked(request, "add_corp_tag")
        if isinstance(body, web.Response):
            return body
        group_id = body.get("group_id")
        if group_id is None:
            name = body.get("group_name")
            group_id = next((gid for gid, group in self.groups.items() if group["group_name"] == name), None)
            if group_id is None:
                group_id = f"etGROUP{next(self._ids)}"
                self.groups[group_id] = {"group_name": name, "order": body.get("order", 0), "tag": []}
        elif group_id not in self.groups:
            return web.json_response({"errcode": 40068, "errmsg": "invalid tagid"})
        group = self.groups[group_id]
        created = []
        for tag in body.get("tag", []):
            if any(existing["name"] == tag["name"] for existing in group["tag"]):
                return web.json_response({"errcode": 40071, "errmsg": "UserTag Name Already Exist"})
            entry = {"id": f"etTAG{next(self._ids)}", "name": tag["name"], "order": tag.get("order", 0)}
            group["tag"].append(entry)
            created.append({**entry, "create_time": 1557838797})
        answer = {"group_id": group_id, "group_name": group["group_name"], "create_time": 1557838797, "tag": created}
        return web.json_response({"errcode": 0, "errmsg": "ok", "tag_group": answer})

    async def _mark_tag(self, request: web.Request) -> web.Response:
        body = await self._checked(request, "mark_tag")
        if isinstance(body, web.Response):
            return body
        if self.mark_delay_s:
            await asyncio.sleep(self.mark_delay_s)
        add, remove = body.get("add_tag") or [], body.get("remove_tag") or []
        if not add and not remove:
            return web.json_response({"errcode": 40058, "errmsg": "add_tag and remove_tag are both empty"})
        if body["external_userid"] in self.unknown_contacts:
            return web.json_response({"errcode": 40096, "errmsg": "invalid external userid"})
        known = {tag["id"] for group in self.groups.values() for tag in group["tag"]}
        if any(tag not in known for tag in [*add, *remove]):
            return web.json_response({"errcode": 40068, "errmsg": "invalid tagid"})
        held = self.marked.setdefault((body["userid"], body["external_userid"]), set())
        held.update(add)
        held.difference_update(remove)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@dataclass
class GroupRobotFake:
    """A WeCom group robot's webhook (`/cgi-bin/webhook/send?key=...`): records each text message with the
    time it arrived; the first `busy` messages are answered errcode 45009 (a robot's 20-a-minute limit)."""

    busy: int = 0
    received: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    """(time.monotonic() at arrival, Idempotency-Key, body) of every message accepted"""
    refused: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> GroupRobotFake:
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._send)
        self._runner, self.port = await _serve(app, 0)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key=robot-key-0001"

    def mentioned(self) -> list[str]:
        return [owner for _, _, body in self.received for owner in body["text"].get("mentioned_list", [])]

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.query.get("key") != "robot-key-0001" or body.get("msgtype") != "text":
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        if self.busy > 0:
            self.busy -= 1
            self.refused += 1
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        self.received.append((time.monotonic(), request.headers.get("Idempotency-Key", ""), body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


async def _serve(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
    """Serve the app on 127.0.0.1 (`port` 0: a free one); returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
