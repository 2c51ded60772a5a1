"""Events: the outbox every feature writes to, and what it records.
Features raise an event with :func:`emit` inside their own transaction.

Rooms:
- :mod:`.outbox` -- :func:`emit` and sequence numbers (what every feature uses);
- :mod:`.catalog` -- the event types and their payload fields;
- :mod:`.models` -- events, handlers, deliveries and attempts, templates
  (``emit`` writes a delivery per matching handler in the caller's
  transaction, so the tables live here);
- :mod:`.types` -- the wire types;
- :mod:`.service` -- the catalog and polling operations (EventTypeList,
  EventList);
- :mod:`.retention` -- pruning old events; :mod:`.runtime` -- the process's
  deliverer threads and their wake-up after commit; :mod:`.jobs` -- the
  periodic work.

Handlers, deliveries and notification templates (which read account
contacts and plugin instances, above this package) are
:mod:`pba_server.notify`'s.

From outside: :func:`emit` (this package), ``outbox``, ``catalog``,
``models``, ``types``; ``runtime`` for ``bootstrap``, the scheduler and
``notify``.
"""

from pba_server.events.outbox import emit

__all__ = ["emit"]
