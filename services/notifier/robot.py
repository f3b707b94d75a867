"""Sales alerts as a WeCom group robot's text message (群机器人, `msgtype: text`).

The `alert` channel's webhook is usually a robot's URL (`https://qyapi.weixin.qq.com/cgi-bin/webhook/
send?key=...`) or a service speaking its format: `{"msgtype": "text", "text": {"content": ...,
"mentioned_list": [owner]}}`, the owner being the salesperson's WeCom userid, so the group's message
@-mentions them. WeCom answers HTTP 200 with an errcode: 0 delivered; 45009 (a robot takes at most 20
messages a minute) and -1 retried; anything else refused with the errcode.
"""

from __future__ import annotations

import orjson

from services.notifier.ports import Message
from services.runtime.resilience import ProviderError

MAX_CONTENT_BYTES = 2048
"""A robot's text content is at most 2048 bytes of UTF-8."""
_RETRIED = frozenset({45009, -1})


def robot_text(message: Message) -> bytes:
    content = (message.text or "").encode()[:MAX_CONTENT_BYTES].decode(errors="ignore")
    text: dict[str, object] = {"content": content}
    if message.to:
        text["mentioned_list"] = [message.to]
    return orjson.dumps({"msgtype": "text", "text": text})


def robot_answer(answer: bytes) -> None:
    """Raises ProviderError unless the answer is errcode 0 (an answer without one is taken as delivered)."""
    try:
        parsed = orjson.loads(answer) if answer.strip() else {}
    except orjson.JSONDecodeError:
        return
    code = parsed.get("errcode", 0) if isinstance(parsed, dict) else 0
    if code == 0 or not isinstance(code, int):
        return
    errmsg = str(parsed.get("errmsg", ""))[:120]
    raise ProviderError(f"alert provider answered errcode {code}: {errmsg}", retryable=code in _RETRIED)
