"""The product catalog: resources, service templates, plans and their versions,
promotions, reseller price lists and price quotes.

Who owns what: the provider and advanced resellers own resources, templates,
plans and promotions. A basic reseller owns none; it sells its catalog
owner's plans (the nearest provider or advanced reseller above it) at the
prices that owner sets for it (``ResellerPriceSet``). Catalog objects are
managed only inside the caller's subtree; plans, templates and resources
owned above the caller are readable (they are what it sells or buys).

Rooms:

- ``types`` / ``models``: the API types and the tables.
- ``checks``: field checks shared by the rooms (pure: values in, values out).
- ``owners``: who owns and who sees catalog items; names unique per owner.
- ``currencies``: ``CurrencyList``.
- ``resources``: ``Resource*``, what is sold and metered.
- ``templates``: ``ServiceTemplate*``, resources with default limits, the
  provisioning module and the order parameters.
- ``terms``: what a plan version fixes and the checks of given terms (pure).
- ``versions``: reading and writing a plan version's terms.
- ``plans``: ``Plan*`` (lifecycle, terms, change paths) but the migrations.
- ``plan_migrations``: ``PlanMigrateSubscribers``, ``PlanMigrationList`` and
  the version a subscription renews at.
- ``promotions``: ``Promotion*``; finding and redeeming one.
- ``price_lists``: ``ResellerPrice*`` and ``WholesalePrice*``.
- ``quotes``: ``PriceQuote`` and :func:`quotes.quote`, which orders price with.
- ``pricing``: the pricing rules (pure) a quote, an order and the billing run share.
- ``parameters``: order parameter definitions and values (pure).
- ``service``: only registers the operations (imports the rooms that declare
  some); import nothing from it.

Other packages may import ``types``, ``models``, ``pricing`` and
``parameters``, the operations of each room, and these public helpers:
``owners`` (``catalog_owner_of``, ``price_list_of``, ``visible_account``,
``owner_for_create``, ``require_editor``), ``templates.template_parameters``,
``versions.terms_of``, ``plans.upgrades_of``, ``price_lists.reseller_prices``,
``plan_migrations.renewal_version``, ``promotions.promotion_redeem`` and
``quotes.quote``. Nothing with a leading underscore.
"""
