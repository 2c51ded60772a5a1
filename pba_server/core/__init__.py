"""Core: what every feature stands on; imports no feature.

Rooms: :mod:`.money`, :mod:`.clock` (the only wall clock), :mod:`.errors`
(fault codes), :mod:`.db` (engine, unit of work, column types),
:mod:`.context` (the call context), :mod:`.runtime` (one app's settings,
clock, secrets and ports), :mod:`.jobs` (job specs), :mod:`.operations`
(the operation table), :mod:`.auth`, :mod:`.scope`, :mod:`.audit`,
:mod:`.idempotency`, :mod:`.paging`, :mod:`.states`, :mod:`.schema`,
:mod:`.secrets`, :mod:`.netpolicy`, :mod:`.logsafe`, :mod:`.carddata`,
:mod:`.operator`, :mod:`.progress`, :mod:`.housekeeping`, :mod:`.resources`,
:mod:`.models` (its own tables).

Everything here may be imported from anywhere (docs/architecture.md).
"""
