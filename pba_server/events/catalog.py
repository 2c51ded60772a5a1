"""The event types every feature may raise, each with its documented payload.

A payload is a JSON object. Every event also carries, outside the payload,
the account it concerns (``account_id``) and a subject (``subject_type``,
``subject_id``). Payload fields may be added later; none is ever renamed or
removed, so integrators can rely on the ones listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pba_server.events.types import EventPayloadField, EventTypeInfo


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    payload: tuple[tuple[str, str, str], ...]  # (name, type, description)

    def info(self) -> EventTypeInfo:
        return EventTypeInfo(
            name=self.name,
            description=self.description,
            payload=[EventPayloadField(n, t, d) for n, t, d in self.payload],
        )


_ACCOUNT = (
    ("account_id", "int", "the account"),
    ("number", "str", "the account number"),
    ("name", "str", "the account name"),
    ("type", "str", "provider, reseller, customer_personal, customer_business, ..."),
    ("status", "str", "active, suspended or closed, after the change"),
    ("parent_id", "int|null", "the parent account"),
)
_SUBSCRIPTION = (
    ("subscription_id", "int", "the subscription"),
    ("plan_id", "int", "its plan"),
    ("status", "str", "the subscription status after the change"),
)
_ORDER = (
    ("order_id", "int", "the order"),
    ("order_type", "str", "sales, renewal, upgrade, downgrade, resource, cancellation, ..."),
    ("status", "str", "the order status after the change"),
    ("total", "decimal", "the order total"),
    ("currency", "str", "ISO 4217 code"),
)
_INVOICE = (
    ("invoice_id", "int", "the invoice"),
    ("number", "str", "the invoice number"),
    ("total", "decimal", "the invoice total"),
    ("currency", "str", "ISO 4217 code"),
    ("due_date", "date", "when payment is due"),
)
_PAYMENT = (
    ("payment_id", "int|null", "the payment in the books (null for a failed one)"),
    ("amount", "decimal", "the amount (refunded: the amount refunded)"),
    ("currency", "str", "ISO 4217 code"),
    ("method", "str", "card, bank_transfer, cheque, cash"),
    ("reason", "str|null", "why it failed (the gateway's decline code) or was refunded"),
    ("charge_id", "int|null", "the card charge (PaymentChargeGet), for card payments"),
    ("invoice_id", "int|null", "the invoice charged, if any"),
)
_SERVICE = (
    ("subscription_id", "int", "the subscription the service belongs to"),
    ("operation_id", "int", "the provisioning operation"),
    ("module", "str", "the processing module"),
    ("error", "str|null", "why it failed"),
)

EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType("account.created", "An account was created.", _ACCOUNT),
        EventType(
            "account.updated",
            "An account's name, tax id, country, credit limit or partner level changed.",
            (
                ("account_id", "int", "the account"),
                ("changes", "object", 'changed fields as {"field": {"from": old, "to": new}}'),
            ),
        ),
        EventType(
            "account.suspended",
            "An account was suspended.",
            (*_ACCOUNT, ("reason", "str|null", "the reason given")),
        ),
        EventType(
            "account.resumed",
            "A suspended account was made active again.",
            (*_ACCOUNT, ("reason", "str|null", "the reason given")),
        ),
        EventType(
            "account.closed",
            "An account was closed.",
            (*_ACCOUNT, ("reason", "str|null", "the reason given")),
        ),
        EventType(
            "account.credit_limit_reached",
            "An account's balance reached its credit limit.",
            (
                ("account_id", "int", "the account"),
                ("balance", "decimal", "the balance"),
                ("credit_limit", "decimal", "the credit limit"),
                ("currency", "str", "ISO 4217 code"),
            ),
        ),
        EventType(
            "user.created",
            "A user was created.",
            (
                ("user_id", "int", "the user"),
                ("login", "str", "the login name"),
                ("account_id", "int", "the account the user belongs to"),
                ("full_name", "str", "the user's name"),
                ("email", "str|null", "the user's e-mail address"),
                ("roles", "list[str]", "the user's roles"),
            ),
        ),
        EventType("order.placed", "An order was placed.", _ORDER),
        EventType("order.approved", "An order waiting for approval was approved.", _ORDER),
        EventType(
            "order.rejected",
            "An order was rejected.",
            (*_ORDER, ("reason", "str|null", "why")),
        ),
        EventType("order.completed", "An order completed.", _ORDER),
        EventType(
            "order.notification",
            "A workflow's notify step: handlers send the order's notification.",
            (*_ORDER, ("step", "str", "the workflow step that raised it")),
        ),
        EventType("subscription.created", "A subscription was created.", _SUBSCRIPTION),
        EventType(
            "subscription.changed",
            "A subscription was upgraded, downgraded or its resources changed.",
            (*_SUBSCRIPTION, ("changes", "object", "changed fields")),
        ),
        EventType("subscription.suspended", "A subscription was suspended.", _SUBSCRIPTION),
        EventType("subscription.resumed", "A subscription was resumed.", _SUBSCRIPTION),
        EventType("subscription.cancelled", "A subscription was cancelled.", _SUBSCRIPTION),
        EventType(
            "subscription.expiring",
            "A subscription reaches the end of its term soon: a renewal reminder"
            " (auto_renew true) or an expiry notice (false).",
            (
                *_SUBSCRIPTION,
                ("expires_on", "date", "the last day"),
                ("days_left", "int", ""),
                ("auto_renew", "bool", "true: it renews then; false: it ends"),
            ),
        ),
        EventType("invoice.issued", "An invoice was issued.", _INVOICE),
        EventType("invoice.paid", "An invoice was paid in full.", _INVOICE),
        EventType(
            "invoice.overdue",
            "An invoice passed its due date unpaid.",
            (*_INVOICE, ("days_overdue", "int", "days since the due date")),
        ),
        EventType("payment.succeeded", "A payment succeeded.", _PAYMENT),
        EventType("payment.failed", "A payment failed (declined, error).", _PAYMENT),
        EventType("payment.refunded", "A payment was refunded.", _PAYMENT),
        EventType(
            "usage.threshold_reached",
            "Usage of a resource reached a threshold of its included amount (80%, 100%).",
            (
                ("subscription_id", "int", "the subscription"),
                ("resource_id", "int", "the resource"),
                ("threshold_percent", "int", "the threshold reached"),
                ("used", "decimal", "the amount used"),
                ("included", "decimal", "the amount included"),
            ),
        ),
        EventType("service.provisioned", "A service was provisioned.", _SERVICE),
        EventType("service.failed", "Provisioning a service failed.", _SERVICE),
        EventType(
            "operation.manual_task",
            "A provisioning operation failed too often and became a manual task.",
            (*_SERVICE, ("task_id", "int", "the manual task"), ("department", "str", "")),
        ),
        EventType(
            "task.opened",
            "A manual task that is not a provisioning operation was opened for a "
            "department (kind registrar_balance: top up a registrar's balance).",
            (
                ("task_id", "int", "the task"),
                ("kind", "str", "registrar_balance"),
                ("subject", "str", "what to do, one line"),
                ("reason", "str", "why"),
                ("department", "str", "the department's name, empty if none"),
                ("instance_id", "int|null", "the plugin instance concerned"),
            ),
        ),
        EventType(
            "domain.expiring",
            "A domain registration expires soon.",
            (
                ("domain", "str", "the domain name"),
                ("subscription_id", "int|null", "its subscription"),
                ("expires_on", "date", "the expiry date"),
                ("days_left", "int", ""),
            ),
        ),
        EventType(
            "registrar.balance_low",
            "The provider's balance at a registrar fell below its minimum.",
            (
                ("registrar", "str", "the registrar plugin"),
                ("balance", "decimal", "the balance"),
                ("minimum", "decimal", "the configured minimum"),
                ("currency", "str", "ISO 4217 code"),
            ),
        ),
    )
}
