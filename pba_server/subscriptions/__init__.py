"""Subscriptions: a customer's instance of a plan version, its period and limits.

Rooms:
- :mod:`.models` -- the ``subscriptions`` and ``subscription_resources`` tables;
- :mod:`.types` -- states (transition table) and wire types;
- :mod:`.periods`, :mod:`.proration` -- calendar and proration rules (pure);
- :mod:`.store` -- the one function that writes a new subscription row
  (:func:`.store.new_subscription`), used by orders (sales) and tests;
- :mod:`.service` -- the operations (changes go through orders) and the
  lifecycle job's work;
- :mod:`.ports` -- what subscriptions need from above (``OrderDesk``,
  ``ServiceLookup``), implemented by orders and provisioning;
- :mod:`.jobs` -- the lifecycle job.

From outside: ``models``, ``types``, ``periods``, ``proration``, ``store``,
``ports`` (to implement them) and the public functions of ``service``.
"""
