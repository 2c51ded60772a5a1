"""Domains: TLDs sold through plans, domains registered through registrar plugins.

Rooms:
- :mod:`.models` -- TLDs, their prices, domains, registrar monitors;
- :mod:`.types` -- the wire types;
- :mod:`.names` -- name rules (pure): normal forms, name servers, "taken";
- :mod:`.checks` -- checks (pure): a TLD's prices, the plan periods that sell
  them, registry contacts;
- :mod:`.registrars` -- lookups shared by the module and the operations:
  a registrar plugin object, the TLD that sells a name, a domain's contacts;
- :mod:`.module` -- the builtin processing module ``domains``;
- :mod:`.tlds` -- ``TldCreate``/``Update``/``List``: a TLD's plans and prices;
- :mod:`.availability` -- ``DomainCheck`` and ``check_order`` (what orders asks
  before a domain plan is ordered);
- :mod:`.records` -- ``domain_info``, ``DomainGet``/``DomainList`` and
  ``move_domains`` (what orders asks when a subscription is transferred);
- :mod:`.updates` -- ``DomainSetNameservers``/``DomainSetContacts`` (at the
  registry, synchronously);
- :mod:`.monitors` -- ``RegistrarBalanceMinimumSet``, ``RegistrarMonitorList``;
- :mod:`.service` -- only registers the operations and the builtin module
  (imports the rooms that declare some); import nothing from it;
- :mod:`.jobs` -- the expiry and registrar-balance jobs.

From outside: ``models``, ``types``, ``names``, ``checks``, ``registrars``,
the operations of each room, ``availability.check_order``,
``records.domain_info`` and ``records.move_domains``. Nothing with a leading
underscore.
"""
