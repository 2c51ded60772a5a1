"""Events: the outbox every feature writes to, handlers, deliveries.

Features raise an event with :func:`emit` inside their own transaction.
"""

from pba_server.events.outbox import emit

__all__ = ["emit"]
