"""Provisioning: processing-module instances, services, operations (retried,
then manual tasks), departments and bundles.

Rooms:
- :mod:`.models` -- instances, services, bundles, operations, tasks, departments;
- :mod:`.types` -- the wire types;
- :mod:`.registry` -- the seams other features plug into (builtin modules,
  ``BUNDLE_HOOKS``, ``USAGE_SINKS``);
- :mod:`.api` -- what orders and dunning call (``provision_subscription``,
  ``request_action``, ``bundle_state``, ``open_task``);
- :mod:`.engine` -- the operation runner (retries, deadlines, recovery);
- :mod:`.service` -- the operations (services, tasks, departments);
- :mod:`.lookup` -- the ``ServiceLookup`` port of subscriptions;
- :mod:`.runtime` -- the module pool; :mod:`.jobs` -- the periodic work.

From outside: ``models``, ``types``, ``registry``, ``api`` and the public
functions of ``service``; ``lookup`` for ``bootstrap``.
"""
