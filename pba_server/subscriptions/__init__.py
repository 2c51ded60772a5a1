"""Subscriptions: a customer's instance of a plan version, its period and limits.

This package owns the ``subscriptions`` and ``subscription_resources`` tables
(:mod:`.models`), the calendar rules for periods (:mod:`.periods`) and the one
function that writes a new subscription row (:func:`.store.new_subscription`),
used by orders (sales), by the billing run's tests and by provisioning's tests.
"""
