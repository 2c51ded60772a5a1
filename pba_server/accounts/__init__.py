"""Accounts: the account tree (provider, resellers, customers), contacts,
users, roles and the first-start set-up.

Rooms:
- :mod:`.models` -- accounts, contacts, users, API keys (tables);
- :mod:`.types` -- the wire types;
- :mod:`.service` -- the operations (AccountCreate, UserCreate...) and the
  lookups other features use (``get_account``, ``insert_account``);
- :mod:`.auth` -- authentication of a call (passwords, API keys, nonces);
- :mod:`.setup` -- the first start (provider and admin).

From outside: ``models``, ``types``, the public functions of ``service``,
``auth.Authenticator`` (the dispatcher) and ``setup`` (the CLI, tests).
"""
