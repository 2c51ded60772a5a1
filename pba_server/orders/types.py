"""Parameter and result types of the order and workflow operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pba_server.catalog.types import PeriodUnit, ResourceQuantity
from pba_server.core.money import Money

OrderType = Literal[
    "sales", "renewal", "upgrade", "downgrade", "resource", "cancellation", "transfer", "payment"
]
OrderStatus = Literal["running", "waiting", "completed", "rejected", "cancelled"]
When = Literal["now", "period_end"]
StepAction = Literal[
    "fraud_screen",
    "invoice",
    "charge",
    "wait_approval",
    "provision",
    "notify",
    "complete",
    "reject",
    "rollback",
]


@dataclass
class ParameterValue:
    name: str
    value: str


@dataclass
class OrderLineInput:
    """One thing ordered. Sales: ``plan_id`` (+ period, options, resources,
    parameters). Renewal, cancellation: ``subscription_id``. Upgrade,
    downgrade: ``subscription_id`` and the new ``plan_id`` (+ ``when``).
    Resource: ``subscription_id`` and ``resources`` (units to add). Transfer:
    ``subscription_id`` and ``to_account_id``. Payment: ``amount``."""

    plan_id: int | None = None
    period_count: int | None = None
    period_unit: PeriodUnit | None = None
    subscription_id: int | None = None
    options: list[int] | None = None
    resources: list[ResourceQuantity] | None = None
    parameters: list[ParameterValue] | None = None
    when: When | None = None
    to_account_id: int | None = None
    amount: Decimal | None = None
    reason: str | None = None


@dataclass
class OrderCharge:
    """A priced line of an order line: what goes on its invoice."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    discount: Money
    amount: Money


@dataclass
class OrderLineInfo:
    position: int
    kind: OrderType
    description: str
    amount: Money
    plan_id: int | None = None
    period_count: int | None = None
    period_unit: PeriodUnit | None = None
    subscription_id: int | None = None
    provisioned: str | None = None
    charges: list[OrderCharge] = field(default_factory=list)


@dataclass
class OrderHistoryEntry:
    at: datetime
    actor: str
    step: str
    action: str
    result: str | None = None
    note: str | None = None


@dataclass
class OrderInfo:
    id: int
    account_id: int
    vendor_id: int
    type: OrderType
    status: OrderStatus
    current_step: str
    current_action: StepAction
    currency: str
    subtotal: Money
    discount: Money
    total: Money
    on_account: bool
    placed_by: str
    created_at: datetime
    updated_at: datetime
    promotion_id: int | None = None
    payment_method_id: int | None = None
    invoice_id: int | None = None
    charge_id: int | None = None
    subscription_id: int | None = None
    fraud_score: int | None = None
    fraud_reasons: list[str] = field(default_factory=list)
    reason: str | None = None
    lines: list[OrderLineInfo] = field(default_factory=list)
    history: list[OrderHistoryEntry] = field(default_factory=list)


@dataclass
class OrderPage:
    items: list[OrderInfo]
    total: int
    offset: int
    limit: int


@dataclass
class WorkflowTransition:
    on: str  # a result of the step's action, or "*" for any
    to: str


@dataclass
class WorkflowStep:
    name: str
    action: StepAction
    transitions: list[WorkflowTransition] = field(default_factory=list)


@dataclass
class WorkflowInfo:
    owner_id: int
    order_type: OrderType
    start: str
    steps: list[WorkflowStep]
    is_default: bool
    updated_at: datetime | None = None


@dataclass
class WorkflowPage:
    items: list[WorkflowInfo]
    total: int
    offset: int
    limit: int


@dataclass
class SignupCustomer:
    """The new customer account (its seller is the caller's account, or
    ``parent_id`` in the caller's subtree)."""

    name: str
    email: str
    type: Literal["customer_personal", "customer_business"] = "customer_personal"
    country: str | None = None
    tax_id: str | None = None
    phone: str | None = None
    address: str | None = None
    city: str | None = None
    postal_code: str | None = None
    parent_id: int | None = None


@dataclass
class SignupUser:
    login: str
    password: str
    full_name: str


@dataclass
class SignupCard:
    """A gateway token for the customer's card (never the card number)."""

    token: str
    brand: str
    last4: str
    expiry_month: int
    expiry_year: int
    holder: str
    instance_id: int | None = None


@dataclass
class SignupResult:
    account_id: int
    user_id: int
    payment_method_id: int
    order: OrderInfo
