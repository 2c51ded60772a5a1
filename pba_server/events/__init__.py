"""Events: the outbox every feature writes to, handlers, deliveries.
Features raise an event with :func:`emit` inside their own transaction.

Rooms:
- :mod:`.outbox` -- :func:`emit` and sequence numbers (what every feature uses);
- :mod:`.catalog` -- the event types and their payload fields;
- :mod:`.models` -- events, handlers, deliveries and attempts, templates;
- :mod:`.types` -- the wire types;
- :mod:`.service` -- the handler and template operations;
- :mod:`.delivery` -- the deliverer (webhooks, mail, commands, channel plugins);
- :mod:`.templates`, :mod:`.template_budget`, :mod:`.notifications` --
  rendering (sandboxed, with a budget) and the notification templates;
- :mod:`.retention` -- pruning old events; :mod:`.runtime` -- the wake-up
  of the deliverer after commit; :mod:`.jobs` -- the periodic work.

From outside: :func:`emit` (this package), ``catalog``, ``models``,
``types``; ``delivery`` and ``runtime`` for ``bootstrap``.
"""

from pba_server.events.outbox import emit

__all__ = ["emit"]
