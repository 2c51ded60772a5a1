"""Usage: metered resource usage reported per subscription, billed as overage
by the billing run.

Rooms: :mod:`.models` (usage records, thresholds), :mod:`.types` (wire
types), :mod:`.service` (UsageReport, UsageGet, thresholds and the
provisioning sync sink), :mod:`.ports` (``BilledPeriods``: whether a period
is invoiced, implemented by billing).

From outside: ``models``, ``types``, the public functions of ``service``.
"""
