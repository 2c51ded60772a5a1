"""Notification templates: per event type and language, rendered in a sandbox.

A template has a subject, a text body and an optional HTML body, written in
Jinja2 and rendered in its immutable sandbox (no attribute starting with an
underscore, no unsafe callables: a template cannot reach Python internals)
with a budget of memory, output and time (``template_budget``), and
``StrictUndefined`` (a misspelt name is an error when the
template is set, not a blank in a customer's mail).

Which template applies to an event: the one set by the nearest account at or
above the event's account (a reseller's own overrides the provider's, for the
reseller's customers only), in the handler's language, else in English, else
the built-in default. Templates see:

- ``event``: ``type``, ``id``, ``occurred_at``, ``description``;
- ``data``: the payload, as documented by EventTypeList;
- ``account``: ``id``, ``name``, ``number`` of the account the event concerns;
- ``brand``: the name of the provider or reseller the account buys from.

Without Jinja2 installed, every event renders one built-in plain form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from pba_server.core.errors import ValidationError
from pba_server.events.catalog import EVENT_TYPES

DEFAULT_LANGUAGE = "en"
LANGUAGE_RE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")


def check_language(value: str, field: str = "language") -> str:
    """``value`` if it is a language code (``en``, ``de``, ``pt-BR``)."""
    if not LANGUAGE_RE.match(value):
        raise ValidationError(field, "must be a language code such as en, de or pt-BR")
    return value


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class Template:
    subject: str
    text: str
    html: str | None = None


class TemplateError(ValueError):
    """The template does not compile, or fails or is refused when rendered."""


_SIGN = "\n\n-- \n{{ brand }}\n"

# The defaults the provider starts from (English).
DEFAULTS: dict[str, Template] = {
    "account.created": Template(
        "Welcome to {{ brand }}",
        "Hello {{ account.name }},\n\nyour account {{ account.number }} is ready." + _SIGN,
    ),
    "service.provisioned": Template(
        "Your service is ready",
        "Hello {{ account.name }},\n\nthe service of subscription "
        "{{ data.subscription_id }} is ready to use." + _SIGN,
    ),
    "invoice.issued": Template(
        "Invoice {{ data.number }}",
        "Hello {{ account.name }},\n\ninvoice {{ data.number }} over {{ data.total }} "
        "{{ data.currency }} is due on {{ data.due_date }}." + _SIGN,
        "<p>Hello {{ account.name }},</p><p>invoice <b>{{ data.number }}</b> over "
        "{{ data.total }} {{ data.currency }} is due on {{ data.due_date }}.</p>"
        "<p>{{ brand }}</p>",
    ),
    "payment.succeeded": Template(
        "Payment received",
        "Hello {{ account.name }},\n\nwe received your payment of {{ data.amount }} "
        "{{ data.currency }}. Thank you." + _SIGN,
    ),
    "payment.failed": Template(
        "Payment failed",
        "Hello {{ account.name }},\n\nyour payment of {{ data.amount }} {{ data.currency }} "
        "failed{% if data.reason %}: {{ data.reason }}{% endif %}." + _SIGN,
    ),
    "invoice.overdue": Template(
        "Reminder: invoice {{ data.number }} is overdue",
        "Hello {{ account.name }},\n\ninvoice {{ data.number }} over {{ data.total }} "
        "{{ data.currency }} was due on {{ data.due_date }} and is {{ data.days_overdue }} "
        "day(s) overdue." + _SIGN,
    ),
    "account.suspended": Template(
        "Your account is suspended",
        "Hello {{ account.name }},\n\nyour account {{ account.number }} was suspended"
        "{% if data.reason %} ({{ data.reason }}){% endif %}." + _SIGN,
    ),
    "subscription.suspended": Template(
        "Your subscription is suspended",
        "Hello {{ account.name }},\n\nsubscription {{ data.subscription_id }} was suspended."
        + _SIGN,
    ),
    "usage.threshold_reached": Template(
        "Usage warning: {{ data.threshold_percent }}% used",
        "Hello {{ account.name }},\n\nsubscription {{ data.subscription_id }} has used "
        "{{ data.used }} of {{ data.included }} included ({{ data.threshold_percent }}%)." + _SIGN,
    ),
}


def generic(event_type: str) -> Template:
    """For event types without a shipped default: the description and the payload."""
    return Template(
        "{{ event.description }}",
        "{{ event.description }}\n\n{% for k, v in data|dictsort %}{{ k }}: {{ v }}\n"
        "{% endfor %}" + _SIGN,
    )


def default_for(event_type: str) -> Template:
    return DEFAULTS.get(event_type) or generic(event_type)


def sample_payload(event_type: str) -> dict[str, Any]:
    """A payload with a plausible value for each documented field (for previews and checks)."""
    samples = {"int": 42, "decimal": "10.00", "date": "2026-01-31", "str": "sample", "bool": True}
    out: dict[str, Any] = {}
    for name, kind, _doc in EVENT_TYPES[event_type].payload:
        base = kind.split("|")[0]
        if name == "currency":
            out[name] = "EUR"
        elif base == "object":
            out[name] = {}
        elif base.startswith("list"):
            out[name] = []
        else:
            out[name] = samples.get(base, "sample")
    return out


@cache
def _environment() -> Any:
    from jinja2 import StrictUndefined

    from pba_server.notify.template_budget import BudgetSandbox

    return BudgetSandbox(undefined=StrictUndefined, autoescape=False)


@cache
def _html_environment() -> Any:
    from jinja2 import StrictUndefined

    from pba_server.notify.template_budget import BudgetSandbox

    return BudgetSandbox(undefined=StrictUndefined, autoescape=True)


def jinja_available() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


def _render_one(env: Any, source: str, context: dict[str, Any], part: str) -> str:
    from jinja2 import TemplateError as JinjaError

    from pba_server.notify import template_budget as tb

    out: list[str] = []
    size = 0
    try:
        # streamed, so a template that renders too much is stopped at the limit
        for chunk in env.from_string(source).generate(context):
            size += len(chunk)
            if size > tb.MAX_OUTPUT:
                raise tb.BudgetExceeded(f"renders to more than {tb.MAX_OUTPUT} characters")
            out.append(chunk)
    except tb.BudgetExceeded as exc:
        raise TemplateError(f"{part}: over the template budget: {exc}") from None
    except JinjaError as exc:  # includes SecurityError and UndefinedError
        raise TemplateError(f"{part}: {type(exc).__name__}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
        raise TemplateError(f"{part}: {type(exc).__name__}: {exc}") from None
    return "".join(out)


def render_template(tpl: Template, context: dict[str, Any]) -> Rendered:
    """Render the parts within one budget (template_budget): a template that
    builds too big a value, renders too much or takes too long raises
    TemplateError naming the part."""
    from pba_server.notify import template_budget as tb

    env = _environment()
    with tb.active(tb.Budget()):
        subject = " ".join(_render_one(env, tpl.subject, context, "subject").split())
        text = _render_one(env, tpl.text, context, "text_body")
        html = (
            _render_one(_html_environment(), tpl.html, context, "html_body") if tpl.html else None
        )
    return Rendered(subject=subject, text=text, html=html)


def context_for(
    event_type: str,
    payload: dict[str, Any],
    *,
    brand: str,
    account: dict[str, Any],
    event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = EVENT_TYPES.get(event_type)
    ev = {"type": event_type, "description": spec.description if spec else event_type}
    ev.update(event or {})
    return {"event": ev, "data": payload, "account": account, "brand": brand}


def render(
    event_type: str,
    payload: dict[str, Any],
    *,
    brand: str,
    template: Template | None = None,
    account: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
) -> Rendered:
    """Render ``template`` (default: the built-in one) for an event."""
    if not jinja_available():
        return _plain(event_type, payload, brand)
    ctx = context_for(event_type, payload, brand=brand, account=account or {}, event=event)
    return render_template(template or default_for(event_type), ctx)


def _plain(event_type: str, payload: dict[str, Any], brand: str) -> Rendered:
    spec = EVENT_TYPES.get(event_type)
    title = spec.description.rstrip(".") if spec else event_type
    lines = [f"{title}.", ""]
    for key in sorted(payload):
        value = payload[key]
        if not isinstance(value, str):
            value = json.dumps(value, sort_keys=True)
        lines.append(f"{key}: {value}")
    lines += ["", f"-- {brand}"]
    return Rendered(subject=f"[{brand}] {title}", text="\n".join(lines) + "\n")
