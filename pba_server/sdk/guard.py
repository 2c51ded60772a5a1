"""Plugin calls as untrusted work (ENGINEERING.md, habit 14).

Every plugin object the server builds (:func:`pba_server.payments.
plugin_objects.plugin_object`) is handed out wrapped in a :class:`GuardedPlugin`.
Each call of a method its kind documents (the kind's ``max_call_seconds``
table) then:

- fails at once, without calling the plugin, while the instance's circuit
  breaker is open (``plugin_breaker_failures`` failures or timeouts in a row
  open it for ``plugin_breaker_cooldown_seconds``; then one trial call);
- on a request thread, takes one of a bounded number of "waiting on a
  plugin" slots (``plugin_wait_percent`` of ``threads``), or fails at once:
  hung plugins can hold at most that share of the request threads, and API
  calls that touch no plugin always have threads left;
- runs on the instance's own small pool of daemon threads
  (``plugin_threads``), never on the caller's thread, and is waited for up to
  its deadline (the kind's maximum, or the plugin's own shorter one). Past
  it the caller stops waiting and gets the kind's ``timeout_error`` (outcome
  unknown, as a gateway timeout: pending and reconciled, or retried); the
  plugin's thread is written off and replaced;
- has its result checked against the kind's ``result_rules``; a result that
  breaks one is refused (the kind's ``failure_error``) and logged with the
  plugin, the instance and the rule;
- has what it raised made fit for the tenant: an exception that is not an
  SDK exception becomes the kind's ``failure_error`` with a generic message
  and a correlation id (``ref``), an SDK exception keeps its type and its
  message with secrets masked. The operator's log gets the detail under the
  same id: message (masked), plugin, instance, traceback.

The calls that fail before reaching the plugin (breaker open, no slot, not
started within the deadline) raise :class:`~pba_server.sdk.PluginBusy`, in a
class that is the kind's ``failure_error`` too (:func:`busy_error`): a call
site that knows it answers ``Server.Busy`` or retries later (nothing was
sent: never a decline, never "outcome unknown"); one that does not treats it
as a failure (retry, pending, manual).

What the tenant sees of a plugin's trouble (the rule, for every call site):
an SDK exception the plugin raised keeps its type and its message, masked
(the kinds document those messages: a decline's code, a registry's refusal);
anything else becomes a generic message with a correlation id and never
names the exception's class. Call sites that catch something unexpected
themselves use :func:`unexpected` for the same.

State (pools, breakers, slots) lives in one :class:`PluginRuntime`, set up
by bootstrap with :func:`configure` (one per process, for now: the lead's
Runtime object is to carry it).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pba_server.core.logsafe import log_with_traceback, mask_secrets
from pba_server.sdk import PluginBusy, PluginError
from pba_server.sdk.net import ConnectionFailed

log = logging.getLogger("pba.plugins.calls")

# The request threads' pool (api/serve.py names it so): only its threads
# count against the waiting slots; the scheduler's jobs wait on their own.
REQUEST_POOL_NAME = "pba-calls"
_REQUEST_THREAD_PREFIX = f"PoolThread-{REQUEST_POOL_NAME}-"
# an idle plugin thread ends after this long
IDLE_SECONDS = 60.0


def new_reference() -> str:
    """A correlation id: what the tenant sees and the operator's log holds."""
    return uuid.uuid4().hex[:12]


def is_request_thread() -> bool:
    return threading.current_thread().name.startswith(_REQUEST_THREAD_PREFIX)


@dataclass(frozen=True)
class GuardSettings:
    threads_per_instance: int = 4
    wait_slots: int = 8
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> GuardSettings:
        return cls(
            threads_per_instance=settings.plugin_threads,
            wait_slots=max(1, settings.threads * settings.plugin_wait_percent // 100),
            breaker_failures=settings.plugin_breaker_failures,
            breaker_cooldown=float(settings.plugin_breaker_cooldown_seconds),
        )


# ---------------------------------------------------------------- the pool of one instance


class _Call:
    __slots__ = ("abandoned", "args", "done", "error", "fn", "kwargs", "result", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.state = "queued"  # queued | running | done
        self.abandoned = False
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Pool:
    """At most ``size`` threads for one instance, the ones hung in a call that
    was given up on included. Daemon threads: a plugin hung for good never
    keeps the process from exiting."""

    def __init__(self, label: str, size: int) -> None:
        self.label = label
        self.size = size
        self._cv = threading.Condition()
        self._queue: deque[_Call] = deque()
        self._threads = 0
        self._idle = 0
        self._lost = 0  # threads still inside a call that was given up on
        self._seq = 0

    def submit(self, call: _Call) -> None:
        with self._cv:
            self._queue.append(call)
            self._maybe_start()
            self._cv.notify()

    def _maybe_start(self) -> None:
        # a thread hung in a call that was given up on still counts: never
        # more than ``size`` calls inside the plugin at once (a plugin that
        # hangs fills its pool, its breaker opens, callers fail fast)
        if self._queue and self._idle < len(self._queue) and self._threads < self.size:
            self._threads += 1
            self._seq += 1
            threading.Thread(
                target=self._work, name=f"pba-plugin-{self.label}-{self._seq}", daemon=True
            ).start()

    def give_up(self, call: _Call) -> str:
        """The caller stops waiting: ``not_started`` (removed, the plugin never
        saw it), ``done`` (it finished meanwhile) or ``abandoned``."""
        with self._cv:
            if call.state == "queued":
                self._queue.remove(call)
                return "not_started"
            if call.state == "done":
                return "done"
            call.abandoned = True
            self._lost += 1
            return "abandoned"

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._idle += 1
                    woke = self._cv.wait(IDLE_SECONDS)
                    self._idle -= 1
                    if not woke and not self._queue:
                        self._threads -= 1
                        return
                call = self._queue.popleft()
                call.state = "running"
            try:
                call.result = call.fn(*call.args, **call.kwargs)
            except BaseException as exc:  # a plugin must never take a thread down silently
                call.error = exc
            with self._cv:
                call.state = "done"
                if call.abandoned:
                    self._lost -= 1
            call.done.set()

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {
                "threads": self._threads,
                "lost": self._lost,
                "queued": len(self._queue),
                "idle": self._idle,
            }


# ---------------------------------------------------------------- the breaker of one instance


class _Breaker:
    def __init__(self, failures: int, cooldown: float, monotonic: Callable[[], float]) -> None:
        self.limit = failures
        self.cooldown = cooldown
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self.failures = 0
        self.open_until: float | None = None
        self.trial = False

    def allow(self) -> float | None:
        """None if the call may go ahead, else the seconds the breaker stays open."""
        with self._lock:
            if self.open_until is None:
                return None
            left = self.open_until - self.monotonic()
            if left > 0 or self.trial:
                return max(left, 0.0)
            self.trial = True  # half open: this call is the trial
            return None

    def cancel_trial(self) -> None:
        with self._lock:
            self.trial = False

    def success(self) -> None:
        with self._lock:
            self.failures, self.open_until, self.trial = 0, None, False

    def failure(self) -> bool:
        """Count one; True if this opened the breaker."""
        with self._lock:
            self.failures += 1
            was_trial, self.trial = self.trial, False
            if was_trial or self.failures >= self.limit:
                self.open_until = self.monotonic() + self.cooldown
                return True
            return False


@dataclass
class _Instance:
    label: str
    pool: _Pool
    breaker: _Breaker


# ---------------------------------------------------------------- the runtime


class PluginRuntime:
    """Pools, breakers and waiting slots of every plugin instance."""

    def __init__(
        self, settings: GuardSettings | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or GuardSettings()
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._instances: dict[tuple[Any, ...], _Instance] = {}
        self._slots = threading.BoundedSemaphore(self.settings.wait_slots)
        self._waiting = 0

    def instance(self, key: tuple[Any, ...], label: str) -> _Instance:
        with self._lock:
            found = self._instances.get(key)
            if found is None:
                s = self.settings
                found = self._instances[key] = _Instance(
                    label,
                    _Pool(label, s.threads_per_instance),
                    _Breaker(s.breaker_failures, s.breaker_cooldown, self.monotonic),
                )
            return found

    def take_slot(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._waiting += 1
        return True

    def give_slot(self) -> None:
        with self._lock:
            self._waiting -= 1
        self._slots.release()

    def waiting(self) -> int:
        """Request threads waiting on a plugin now."""
        with self._lock:
            return self._waiting

    def reset(self) -> None:
        """Forget every breaker (tests that reuse instance ids)."""
        with self._lock:
            for inst in self._instances.values():
                inst.breaker.success()

    def wrap(
        self,
        obj: Any,
        base: type,
        *,
        instance_id: int,
        plugin: str,
        key: tuple[Any, ...],
        secrets: tuple[str, ...] = (),
    ) -> GuardedPlugin:
        label = f"{plugin}-{instance_id}"
        return GuardedPlugin(
            obj, base, self, self.instance(key, label), plugin, instance_id, secrets
        )


_runtime = PluginRuntime()


def configure(settings: GuardSettings) -> PluginRuntime:
    """A fresh runtime for this process (bootstrap, once per app)."""
    global _runtime
    _runtime = PluginRuntime(settings)
    return _runtime


def runtime() -> PluginRuntime:
    return _runtime


# ---------------------------------------------------------------- the guard


def masked_traceback(exc: BaseException, secrets: tuple[str, ...]) -> str:
    return mask_secrets("".join(traceback.format_exception(exc)), secrets)


def unexpected(
    logger: logging.Logger, what: str, exc: BaseException, secrets: tuple[str, ...] = ()
) -> str:
    """Something unexpected (``exc``) failed ``what``: log the detail for the
    operator (message masked, traceback) under a new correlation id and
    return the tenant's text, ``"<what> failed (ref <id>)"``: no exception
    class, no message."""
    ref = new_reference()
    log_with_traceback(
        logger,
        logging.ERROR,
        f"{what} failed (ref {ref}): " + mask_secrets(f"{type(exc).__name__}: {exc}", secrets),
        masked_traceback(exc, secrets),
    )
    return f"{what} failed (ref {ref})"


_BUSY: dict[type[PluginError], type[PluginError]] = {}
_BUSY_LOCK = threading.Lock()


def busy_error(failure_error: type[PluginError]) -> type[PluginError]:
    """The exception a kind's callers get for a call that was not made: a
    :class:`~pba_server.sdk.PluginBusy` that is also the kind's
    ``failure_error`` (and has its name)."""
    if issubclass(failure_error, PluginBusy):
        return failure_error
    with _BUSY_LOCK:
        found = _BUSY.get(failure_error)
        if found is None:
            found = _BUSY[failure_error] = type(
                failure_error.__name__,
                (PluginBusy, failure_error),
                {"__module__": failure_error.__module__, "__doc__": PluginBusy.__doc__},
            )
        return found


def _not_called(
    failure_error: type[PluginError], message: str, retry_after: float | None = None
) -> PluginError:
    exc = busy_error(failure_error)(message)
    exc.retry_after = retry_after  # type: ignore[attr-defined]
    return exc


def masked_result(result: Any, secrets: tuple[str, ...]) -> Any:
    """``result`` with the secrets masked in the text fields a kind documents
    for people (``message``, ``reason``, ``reasons``) of a result dataclass."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        return result
    changes: dict[str, Any] = {}
    for name in ("message", "reason"):
        value = getattr(result, name, None)
        if isinstance(value, str) and mask_secrets(value, secrets) != value:
            changes[name] = mask_secrets(value, secrets)
    reasons = getattr(result, "reasons", None)
    if isinstance(reasons, tuple) and all(isinstance(r, str) for r in reasons):
        masked = tuple(mask_secrets(r, secrets) for r in reasons)
        if masked != reasons:
            changes["reasons"] = masked
    if not changes:
        return result
    try:
        return dataclasses.replace(result, **changes)
    except (TypeError, ValueError):
        return result


def mask_exception(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Mask secrets in what ``str(exc)`` (and a ``message`` attribute) shows."""
    try:
        exc.args = tuple(mask_secrets(a, secrets) if isinstance(a, str) else a for a in exc.args)
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            exc.message = mask_secrets(message, secrets)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # an exception class that will not be changed
        pass


@functools.cache
def _signature(base: type, method: str) -> inspect.Signature | None:
    try:
        return inspect.signature(getattr(base, method))
    except (AttributeError, TypeError, ValueError):
        return None


def call_arguments(
    base: type, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Mapping[str, Any]:
    sig = _signature(base, method)
    if sig is None:
        return kwargs
    try:
        bound = sig.bind_partial(None, *args, **kwargs)
    except TypeError:
        return kwargs
    return {k: v for k, v in bound.arguments.items() if k != "self"}


class GuardedPlugin:
    """A plugin object whose documented methods are guarded calls; any other
    attribute (``info``, ``supports``, ``settings``...) is the plugin's own."""

    def __init__(
        self,
        obj: Any,
        base: type,
        rt: PluginRuntime,
        state: _Instance,
        plugin: str,
        instance_id: int,
        secrets: tuple[str, ...],
    ) -> None:
        self._obj = obj
        self._base = base
        self._rt = rt
        self._state = state
        self._plugin = plugin
        self._instance_id = instance_id
        self._secrets = secrets
        self._label = f"plugin {plugin} (instance {instance_id})"
        limits: Mapping[str, float] = getattr(base, "max_call_seconds", {})
        own: Mapping[str, float] = getattr(type(obj), "max_call_seconds", limits)
        self._deadlines = {
            m: min(float(limit), float(own.get(m, limit))) for m, limit in limits.items()
        }

    @property
    def unguarded(self) -> Any:
        """The plugin object itself (tests, the conformance kits)."""
        return self._obj

    def deadline(self, method: str) -> float | None:
        return self._deadlines.get(method)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if name in self._deadlines and callable(attr):
            return functools.partial(self._call, name, attr)
        return attr

    def __repr__(self) -> str:
        return f"<guarded {self._label}>"

    # ------------------------------------------------------------ one call

    def _call(self, method: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        base, state = self._base, self._state
        failure_error: type[PluginError] = getattr(base, "failure_error", PluginError)
        timeout_error: type[PluginError] = getattr(base, "timeout_error", PluginError)
        deadline = self._deadlines[method]
        still_open = state.breaker.allow()
        if still_open is not None:
            log.warning(
                "%s: %s not called: circuit open for %.0f s more",
                self._label,
                method,
                still_open,
            )
            raise _not_called(
                failure_error,
                f"{self._label} is not called for now: it failed {state.breaker.failures} "
                f"time(s) in a row (circuit open for {still_open:.0f} s more); nothing was "
                "sent; try again later",
                still_open,
            )
        slot = is_request_thread()
        if slot and not self._rt.take_slot():
            state.breaker.cancel_trial()
            log.warning(
                "%s: %s not called: %d request threads already wait on plugins",
                self._label,
                method,
                self._rt.settings.wait_slots,
            )
            raise _not_called(
                failure_error,
                f"{self._label} is not called: the server is busy with other plugin calls; "
                "nothing was sent; try again shortly",
            )
        try:
            call = _Call(fn, args, kwargs)
            state.pool.submit(call)
            if not call.done.wait(deadline):
                outcome = state.pool.give_up(call)
                if outcome == "not_started":
                    state.breaker.cancel_trial()
                    log.warning(
                        "%s: %s not called: no thread of the instance free within %g s",
                        self._label,
                        method,
                        deadline,
                    )
                    raise _not_called(
                        failure_error,
                        f"{self._label} is not called: it is busy with earlier calls; "
                        "nothing was sent; try again shortly",
                    )
                if outcome == "abandoned":
                    ref = new_reference()
                    opened = state.breaker.failure()
                    log.warning(
                        "%s: %s got no answer within %g s (ref %s); outcome unknown%s",
                        self._label,
                        method,
                        deadline,
                        ref,
                        "; circuit opened" if opened else "",
                    )
                    raise timeout_error(
                        f"{self._label} did not answer in time (ref {ref}); outcome unknown"
                    )
        finally:
            if slot:
                self._rt.give_slot()
        if call.error is not None:
            self._failed(method, call.error, failure_error, timeout_error)
        result = call.result
        rule = getattr(base, "result_rules", {}).get(method)
        broken = rule(result, call_arguments(base, method, args, kwargs)) if rule else None
        if broken:
            ref = new_reference()
            opened = state.breaker.failure()
            log.error(
                "%s: %s result refused (ref %s): %s%s",
                self._label,
                method,
                ref,
                mask_secrets(broken, self._secrets),
                "; circuit opened" if opened else "",
            )
            raise failure_error(
                f"{self._label} gave an invalid answer (ref {ref}): "
                + mask_secrets(broken, self._secrets)
            )
        state.breaker.success()
        return masked_result(result, self._secrets)

    def _failed(
        self,
        method: str,
        exc: BaseException,
        failure_error: type[PluginError],
        timeout_error: type[PluginError],
    ) -> None:
        state, secrets = self._state, self._secrets
        detail = mask_secrets(f"{type(exc).__name__}: {exc}", secrets)
        if isinstance(exc, PluginError):
            if isinstance(exc, failure_error | timeout_error | ConnectionFailed):
                ref = new_reference()
                opened = state.breaker.failure()
                log_with_traceback(
                    log,
                    logging.WARNING,
                    f"{self._label}: {method} failed (ref {ref}): {detail}"
                    + ("; circuit opened" if opened else ""),
                    masked_traceback(exc, secrets),
                )
            else:  # an answer (declined, refused, not supported): the plugin works
                state.breaker.success()
            mask_exception(exc, secrets)
            raise exc
        ref = new_reference()
        opened = state.breaker.failure()
        log_with_traceback(
            log,
            logging.ERROR,
            f"{self._label}: {method} raised (ref {ref}): {detail}"
            + ("; circuit opened" if opened else ""),
            masked_traceback(exc, secrets),
        )
        raise failure_error(f"{self._label} failed (ref {ref}); outcome unknown") from None


def built(
    build: Callable[[], Any], *, plugin: str, instance_id: int, secrets: tuple[str, ...]
) -> Any:
    """``build()`` (a plugin's ``__init__``), with what it raises made fit for
    the tenant as for a call: an SDK exception masked, anything else a
    :class:`~pba_server.sdk.ConfigurationError` with a correlation id."""
    from pba_server.sdk import ConfigurationError

    try:
        return build()
    except PluginError as exc:
        mask_exception(exc, secrets)
        raise
    except Exception as exc:
        ref = new_reference()
        log_with_traceback(
            log,
            logging.ERROR,
            f"plugin {plugin} (instance {instance_id}) could not be built (ref {ref}): "
            + mask_secrets(f"{type(exc).__name__}: {exc}", secrets),
            masked_traceback(exc, secrets),
        )
        raise ConfigurationError(
            f"plugin {plugin} (instance {instance_id}) could not be set up (ref {ref})"
        ) from None
