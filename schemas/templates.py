"""The message template language playbooks and campaigns are written in, checked when they are loaded.

The notifier renders them (services/notifier/policy/templates.py) over an allow-listed context, so a
template cannot reach other data.

Placeholders (docs/notifier.md): ${name} (the customer's name), ${customer_id}, ${group} and ${tag}
(the trigger's group and tag *names*, as the shop wrote them), ${group_id} and ${tag_id}, ${coupon}
(the coupon kind, on coupon steps), ${playbook}. A literal $ is $$.

A value can be missing: a customer without a profile has no name, a push step no coupon. Then
`${name|there}` renders its fallback (`there`), and a placeholder without one drops its whole line:
no message says "Hi , gold". A file whose template could lose every line that way is refused when
loaded, so a message is never empty.
"""

from __future__ import annotations

import re

PLACEHOLDERS = frozenset({"name", "customer_id", "group", "tag", "group_id", "tag_id", "coupon", "playbook"})
MAY_BE_MISSING = frozenset({"name", "coupon"})
"""The others always have a value (a group or tag the definitions do not name renders its id)."""

TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:\|(?P<fallback>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<invalid>))"
)


def check_template(template_id: str, text: str) -> None:
    unknown: set[str] = set()
    lines_kept = 0
    for line in text.split("\n"):
        vanishes = False
        for token in TOKEN.finditer(line):
            if token["invalid"] is not None:
                excerpt = line[token.start() : token.start() + 20]
                raise ValueError(
                    f"template {template_id!r}: bad placeholder syntax at {excerpt!r} "
                    "(write ${name} or ${name|fallback}; a literal $ is $$)"
                )
            name = token["braced"] or token["bare"]
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                unknown.add(name)
            elif name in MAY_BE_MISSING and token["fallback"] is None:
                vanishes = True
        if line.strip() and not vanishes:
            lines_kept += 1
    if unknown:
        raise ValueError(
            f"template {template_id!r}: unknown placeholder(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(PLACEHOLDERS))}"
        )
    if text.strip() and not lines_kept:
        raise ValueError(
            f"template {template_id!r}: every line holds ${{name}} or ${{coupon}} without a fallback, so a customer "
            "without a name would get an empty message; give it one, e.g. ${name|there}, or add a line without it"
        )
