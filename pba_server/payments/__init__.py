"""Online payments: plugin instances, stored payment methods, gateway charges
and their reconciliation. Money reaches the ledger only through billing's
payment functions.

Rooms:

- ``plugins``: plugin instances of every kind (PluginList, PluginConfigure,
  PluginInstance*) and routing rules (PaymentRouting*, :func:`route`);
- ``methods``: stored payment methods (PaymentMethod*) and the auto-pay
  switch (PaymentAutopayGet/Set);
- ``charges``: gateway charges and refunds (PaymentCharge, PaymentChargeGet,
  PaymentRefund); the pending row is committed, leased while the gateway
  call runs, before the gateway hears of it;
- ``reconcile``: asking the gateway about charges and refunds left pending
  (jobs ``payments-recover``, interval 15 s, for charges whose lease expired,
  and ``payments-reconcile``, every 5 minutes, for the rest);
- ``autopay``: charging newly issued invoices to the default method;
- ``plugin_objects``: building a plugin object for an instance (any kind);
- ``models``, ``types``, ``roles``, ``jobs``; ``service`` imports the rooms
  so their operations register.

What other packages may import: the operations and public functions of
``plugins`` (:func:`~pba_server.payments.plugins.get_instance`,
:func:`~pba_server.payments.plugins.gateway_for`), ``methods``
(:func:`~pba_server.payments.methods.get_method`,
:func:`~pba_server.payments.methods.autopay_enabled`), ``charges``,
``reconcile`` (:func:`~pba_server.payments.reconcile.settle_charge`,
:data:`~pba_server.payments.reconcile.NOT_FOUND`), ``autopay``
(:func:`~pba_server.payments.autopay.autopay_invoice`), ``plugin_objects``,
``models`` and ``types``. Nothing with a leading underscore.
"""
