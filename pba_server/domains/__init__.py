"""Domains: TLDs sold through plans, domains registered through registrar plugins.

Rooms:
- :mod:`.models` -- TLDs, their prices, domains, registrar monitors;
- :mod:`.types` -- the wire types;
- :mod:`.names` -- name rules (pure): normal forms, name servers, "taken";
- :mod:`.registrars` -- lookups shared by the module and the operations:
  a registrar plugin object, the TLD that sells a name, a domain's contacts;
- :mod:`.module` -- the builtin processing module ``domains``;
- :mod:`.service` -- the operations (TldCreate, DomainCheck...) and what
  orders asks (``check_order``, ``move_domains``);
- :mod:`.jobs` -- the expiry and registrar-balance jobs.

From outside: ``models``, ``types``, ``names``, ``registrars`` and the public
functions of ``service``.
"""
