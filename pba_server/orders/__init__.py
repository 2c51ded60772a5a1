"""Orders: the only way a subscription changes, run through a workflow.
The highest feature (it may use every other one).

Rooms:
- :mod:`.models` -- orders, their lines and history, workflows;
- :mod:`.types` -- the wire types (also the order vocabulary subscriptions use);
- :mod:`.workflow` -- workflows as data: validation and the defaults;
- :mod:`.pricing` -- pricing an order line (the one code path for orders and previews);
- :mod:`.engine` -- the durable step runner (background, exactly once): runs
  the steps of :data:`.engine.ACTIONS`, one transaction each;
- :mod:`.runner` -- the runner thread of each app, and waking it after a commit;
- :mod:`.records` -- what every step shares: the order's context, lines, history
  rows and events;
- :mod:`.steps` -- the steps in one transaction: fraud screen, invoice, approval,
  notify, complete, reject (and cancelling the order's invoice);
- :mod:`.charging` -- the ``charge`` step (the gateway, under a lease, once);
- :mod:`.bundles` -- the ``provision`` step and the provisioning bundle hook;
- :mod:`.effects` -- what an order does to subscriptions (once);
- :mod:`.rollback` -- the ``rollback`` step;
- :mod:`.checks` -- what the operation rooms share (pure): who sells, the text check;
- :mod:`.queries` -- an order in its API shape (``order_info``), ``OrderGet``, ``OrderList``;
- :mod:`.workflows` -- which workflow an order runs (``workflow_for``), ``Workflow*``;
- :mod:`.order_lines` -- one order line checked by its type and priced (``price_line``);
- :mod:`.placing` -- ``place``, ``OrderPlace`` and ``OrderPlaceWithSignup``;
- :mod:`.decisions` -- ``OrderApprove``, ``OrderReject``, ``OrderCancel``;
- :mod:`.service` -- only registers the operations (imports the rooms that
  declare some); import nothing from it;
- :mod:`.fraud` -- fraud screening through screener plugins;
- :mod:`.provisioner` -- the ``Provisioner`` port to the provisioning engine;
- :mod:`.desk` -- the ``OrderDesk`` port of subscriptions, implemented here;
- :mod:`.renewals` -- the ``RenewalOrders`` port of billing (which subscriptions
  have a manual renewal order running), implemented here;
- :mod:`.jobs` -- the order-runner job.

From outside: ``models``, ``types``, the operations of each room and
``placing.place``, ``queries.order_info``, ``order_lines.price_line`` (what
``desk`` uses); ``desk.Desk``, ``renewals.Renewals`` and ``provisioner`` only
for ``bootstrap`` (and tests). Nothing with a leading underscore.
"""
