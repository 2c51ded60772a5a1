"""Notify: telling the outside world about events, after they are committed.

:mod:`pba_server.events` records what happened (the outbox every feature
writes to, inside its own transaction). This package acts on those records:
event handlers (webhooks, e-mail, commands, notification channel plugins),
their deliveries, and the notification templates the e-mails and channel
messages are rendered from. It sits above ``payments`` because a channel
handler sends through a plugin instance, and above ``accounts`` because
e-mails go to an account's contacts under its seller's brand; nothing below
it needs any of this (``emit`` writes a delivery row per matching handler,
which is ``events``' own table).

Rooms:
- :mod:`.handlers` -- the handler operations (EventHandlerCreate, List,
  Update, Delete) and their deliveries (DeliveryList, DeliveryRetry);
- :mod:`.template_service` -- the notification template operations
  (NotificationTemplateSet, Get, List, Delete, Preview);
- :mod:`.delivery` -- the deliverer: claims due deliveries and sends them
  (webhooks, mail, commands, channel plugins), with retries;
- :mod:`.notifications` -- which template and brand apply to an account
  (the database side of rendering);
- :mod:`.templates`, :mod:`.template_budget` -- rendering, sandboxed and
  within a budget (pure: values in, values out);
- :mod:`.types` -- the wire types.

The tables (handlers, deliveries, attempts, templates) are
:mod:`pba_server.events.models`; the deliverer's thread and its wake-up after
commit are :mod:`pba_server.events.runtime`.

From outside: ``delivery`` (``Deliverer``, ``MailSettings``) for
``bootstrap``; ``types``. The operations register when ``bootstrap``
imports ``handlers`` and ``template_service``.
"""
