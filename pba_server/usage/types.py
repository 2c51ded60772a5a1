"""Wire types of the usage operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from pba_server.core.money import Money


@dataclass
class UsageRecordInput:
    subscription_id: int
    resource_id: int
    quantity: Decimal
    timestamp: datetime
    record_id: str


@dataclass
class UsageReportResult:
    accepted: int  # new records
    duplicates: int  # records already reported (same subscription and record_id): ignored


@dataclass
class ResourceUsageInfo:
    resource_id: int
    name: str
    unit: str
    used: Decimal
    included: Decimal
    bought: Decimal
    billable: Decimal  # used above included + bought
    overage_price: Decimal  # per unit and month
    overage_amount: Money  # what the billable amount costs for the period


@dataclass
class UsageInfo:
    subscription_id: int
    period_start: date
    period_end: date
    currency: str
    billed: bool  # whether the period's usage has been invoiced (later records are late lines)
    resources: list[ResourceUsageInfo] = field(default_factory=list)
