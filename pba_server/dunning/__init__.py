"""Dunning: reminders, suspension and termination for overdue invoices; credit hold.

Rooms: :mod:`.models` (schedules, steps, runs), :mod:`.types` (wire types),
:mod:`.service` (the operations, the dunning run, resumption on payment and
``on_credit_hold``), :mod:`.jobs` (the daily run).

From outside: ``models``, ``types`` and the public functions of ``service``
(orders asks ``on_credit_hold``).
"""
