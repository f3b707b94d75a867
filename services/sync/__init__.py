"""The tag sync sink (`tagstream sync`): keeps an external system's tags in step with `tag-changes`.

A fourth consumer of tagstream.tag-changes beside the projector and the notifier, with adapters for
a signed webhook (webhook.py) and WeCom corp tags (wecom.py). docs/sync.md is the operators' page.
"""
