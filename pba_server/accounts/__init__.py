"""Accounts: the account tree (provider, resellers, customers), contacts,
users, roles and the first-start set-up.

Rooms:
- :mod:`.models` -- accounts, contacts, users, API keys (tables);
- :mod:`.types` -- the wire types;
- :mod:`.checks` -- field checks (pure: values in, values out): text, e-mail,
  country, credit limit, roles, passwords;
- :mod:`.records` -- what the rooms share: role sets, ``get_account`` (an
  account the caller sees), accounts and contacts in their API shape, account
  events, ``insert_account``;
- :mod:`.tree` -- ``AccountCreate``/``Get``/``List``/``Update``;
- :mod:`.standing` -- what the parent sets: credit limit, partner level,
  ``AccountSuspend``/``Resume``/``Close``;
- :mod:`.contacts` -- ``Contact*``;
- :mod:`.users` -- ``User*``, ``WhoAmI`` and ``insert_user``;
- :mod:`.keys` -- ``ApiKey*``;
- :mod:`.auth` -- authentication of a call (passwords, API keys, nonces);
- :mod:`.setup` -- the first start (provider and admin);
- :mod:`.service` -- only registers the operations (imports the rooms that
  declare some); import nothing from it.

From outside: ``models``, ``types``, the operations of each room,
``records.get_account`` (and ``insert_account``), ``users.insert_user``,
``checks``, ``auth.Authenticator`` (the dispatcher) and ``setup`` (the CLI,
tests). Nothing with a leading underscore.
"""
