"""Message texts: `string.Template` over an allow-listed context, so a template cannot reach other data.

Placeholders: ${name} (the customer's name, "" when unknown), ${customer_id}, ${group}, ${tag},
${coupon}, ${playbook}. A file using any other placeholder is refused when loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

PLACEHOLDERS = frozenset({"name", "customer_id", "group", "tag", "coupon", "playbook"})


def check_template(template_id: str, text: str) -> None:
    template = Template(text)
    if not template.is_valid():
        raise ValueError(f"template {template_id!r}: bad placeholder syntax (write ${{name}}; a literal $ is $$)")
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"template {template_id!r}: unknown placeholder(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(PLACEHOLDERS))}"
        )


def render(text: str, context: Mapping[str, str | None]) -> str:
    """Fill the allowed placeholders; a missing value renders as an empty string."""
    values = {name: (context.get(name) or "") for name in PLACEHOLDERS}
    return Template(text).substitute(values)
