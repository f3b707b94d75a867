"""The WeCom adapter: tagstream's groups and tags as WeCom corp tag groups and tags (by name), marked
and unmarked on each customer's external contact.

- Mapping: a group's `name` is the corp tag group's `group_name`, a tag's `name` the corp tag's `name`
  (WeCom allows 30 characters; a longer name is refused with the change dead-lettered). The corp's
  library is read once (`externalcontact/get_corp_tag_list`) and the ids cached; a tag missing from
  it is created (`externalcontact/add_corp_tag`, into the existing group when there is one).
- Marking: one `externalcontact/mark_tag` per customer and batch, `userid` = the profile's
  follow_user (else owner), `external_userid` from the profile; the net effect of the customer's
  changes in the batch (a tag added then removed is only removed). A customer without both is not
  a WeCom contact: counted `no_contact`, nothing sent (a resync catches up once the profile has them).
- 40068 (a tag id WeCom no longer knows: deleted by an admin) re-reads the library once and retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from services.runtime.customers import CustomerStore
from services.sync.ports import Applied, Outbound, Rejected, Snapshot
from services.sync.wecom_api import INVALID_TAG, WeComApi, WeComError

MAX_NAME = 30
CONCURRENCY = 4
"""Customers marked at once: WeCom rate-limits per corp and app, so a few in flight are enough."""


class WeComAdapter:
    name = "wecom"

    def __init__(self, api: WeComApi, customers: CustomerStore, *, agent_id: int | None = None) -> None:
        self.api = api
        self._customers = customers
        self._agent_id = agent_id
        self._groups: dict[str, str] = {}
        """group name -> corp group id"""
        self._tags: dict[tuple[str, str], str] = {}
        """(group name, tag name) -> corp tag id"""
        self._loaded = False
        self._library = asyncio.Lock()

    async def apply(self, changes: Sequence[Outbound]) -> Applied:
        wanted: dict[str, dict[tuple[str, str], bool]] = {}
        seqs: dict[str, list[int]] = {}
        for item in changes:  # record order: the customer's later change of a tag wins
            key = (item.group.name, item.tag_name)
            per_customer = wanted.setdefault(item.change.customer_id, {})
            per_customer.pop(key, None)
            per_customer[key] = item.change.change == "added"
            seqs.setdefault(item.change.customer_id, []).append(item.change.seq)
        return await self._mark_all([(customer_id, marks, seqs[customer_id]) for customer_id, marks in wanted.items()])

    async def replace(self, snapshots: Sequence[Snapshot]) -> Applied:
        work = []
        for snapshot in snapshots:
            marks = {
                (group.name, tag.name): (group.id, tag.id) in snapshot.held
                for group in snapshot.groups
                for tag in group.tags
            }
            work.append((snapshot.customer_id, marks, [snapshot.seq]))
        return await self._mark_all(work)

    async def close(self) -> None:
        await self.api.close()

    async def _mark_all(self, work: list[tuple[str, dict[tuple[str, str], bool], list[int]]]) -> Applied:
        result = Applied()
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(customer_id: str, marks: dict[tuple[str, str], bool], seqs: list[int]) -> None:
            async with slots:
                refused = await self._mark(customer_id, marks)
            if refused == "no_contact":
                result.no_contact += len(seqs)
            elif refused is not None:
                result.rejected.extend(Rejected(customer_id, seq, refused) for seq in seqs)

        await asyncio.gather(*(one(*item) for item in work))  # Unavailable from any: the batch is redone
        return result

    async def _mark(self, customer_id: str, marks: dict[tuple[str, str], bool]) -> str | None:
        """None when marked; "no_contact"; or why WeCom refused."""
        profile = await self._customers.profile(customer_id)
        member, contact = profile.wecom_member, profile.external_userid
        if member is None or contact is None:
            return "no_contact"
        too_long = next((name for pair in marks for name in pair if len(name) > MAX_NAME), None)
        if too_long is not None:
            return f"the name {too_long[:40]!r} is longer than WeCom's {MAX_NAME} characters for a corp tag"
        for retry in (False, True):
            try:
                add = [await self._tag_id(group, tag, create=True) for (group, tag), on in marks.items() if on]
                remove = [await self._tag_id(group, tag, create=False) for (group, tag), on in marks.items() if not on]
                body = {
                    "userid": member,
                    "external_userid": contact,
                    "add_tag": [tag for tag in add if tag],
                    "remove_tag": [tag for tag in remove if tag],
                }
                if body["add_tag"] or body["remove_tag"]:  # WeCom refuses a mark_tag with both empty
                    await self.api.call("externalcontact/mark_tag", body)
                return None
            except WeComError as error:
                if error.errcode == INVALID_TAG and not retry:
                    await self._reload()
                    continue
                return error.detail
        return None

    async def _tag_id(self, group: str, tag: str, *, create: bool) -> str | None:
        """The corp tag's id; created when missing and `create`, else None when WeCom has no such tag."""
        if (group, tag) in self._tags:
            return self._tags[(group, tag)]
        async with self._library:  # one creation per tag even with several customers in flight
            if not self._loaded:
                await self._load()
            if (group, tag) in self._tags or not create:
                return self._tags.get((group, tag))
            body: dict[str, Any] = {"tag": [{"name": tag}]}
            if group in self._groups:
                body["group_id"] = self._groups[group]
            else:
                body["group_name"] = group
            if self._agent_id is not None:
                body["agentid"] = self._agent_id
            try:
                answer = await self.api.call("externalcontact/add_corp_tag", body)
            except WeComError:
                await self._load()  # created meanwhile by someone else (an admin, another sink)?
                if (group, tag) in self._tags:
                    return self._tags[(group, tag)]
                raise
            self._remember([answer.get("tag_group")])
            if (group, tag) not in self._tags:
                raise WeComError("externalcontact/add_corp_tag", -2, f"the answer holds no tag {tag[:40]!r}")
            return self._tags[(group, tag)]

    async def _reload(self) -> None:
        async with self._library:
            self._tags.clear()
            self._groups.clear()
            await self._load()

    async def _load(self) -> None:
        answer = await self.api.call("externalcontact/get_corp_tag_list", {})
        groups = answer.get("tag_group")
        self._remember(groups if isinstance(groups, list) else [])
        self._loaded = True

    def _remember(self, groups: Iterable[Any]) -> None:
        for group in groups:
            if not isinstance(group, dict) or group.get("deleted"):
                continue
            group_name, group_id = group.get("group_name"), group.get("group_id")
            if not isinstance(group_name, str) or not isinstance(group_id, str):
                continue
            self._groups[group_name] = group_id
            for tag in group.get("tag") or []:
                if isinstance(tag, dict) and not tag.get("deleted") and isinstance(tag.get("id"), str):
                    self._tags[(group_name, str(tag.get("name")))] = tag["id"]
