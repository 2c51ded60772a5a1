"""Orders: the only way a subscription changes, run through a workflow.
The highest feature (it may use every other one).

Rooms:
- :mod:`.models` -- orders, their lines and history, workflows;
- :mod:`.types` -- the wire types (also the order vocabulary subscriptions use);
- :mod:`.workflow` -- workflows as data: validation and the defaults;
- :mod:`.pricing` -- pricing an order line (the one code path for orders and previews);
- :mod:`.engine` -- the durable step runner (background, exactly once);
- :mod:`.service` -- the API operations;
- :mod:`.fraud` -- fraud screening through screener plugins;
- :mod:`.provisioner` -- the ``Provisioner`` port to the provisioning engine;
- :mod:`.desk` -- the ``OrderDesk`` port of subscriptions, implemented here;
- :mod:`.jobs` -- the order-runner job.

From outside: ``models``, ``types``, the public functions of ``service``;
``desk.Desk`` and ``provisioner`` only for ``bootstrap`` (and tests).
"""
