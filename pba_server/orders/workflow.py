"""Workflows as data: named steps, each an action and its transitions.

A workflow is ``{"start": name, "steps": [{"name", "action", "transitions":
[{"on": result, "to": step}]}]}``. A step's action produces a *result*; the
transition whose ``on`` equals it (or ``"*"``, any result) names the next
step. Kinds of transition, as PRODUCT.md calls them:

- automatic: one transition ``on: "*"``;
- manual: the ``wait_approval`` action waits for a person (``OrderApprove``
  gives ``approved``, ``OrderReject`` gives ``rejected``);
- rule: one transition per result of the action (e.g. the fraud screen's
  ``pass`` / ``suspect`` / ``fraud``, the charge's ``paid`` / ``declined``).

``complete`` and ``reject`` end an order and have no transitions.
Validation (``WorkflowSet``): the start exists, step names are unique, every
transition goes to a step, every result an action can produce has a
transition, every step is reachable from the start and there is no cycle, so
every path ends in ``complete`` or ``reject``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pba_server.core.errors import ValidationError

ORDER_TYPES = (
    "sales",
    "renewal",
    "upgrade",
    "downgrade",
    "resource",
    "cancellation",
    "transfer",
    "payment",
)

# action -> the results it can produce
ACTIONS: dict[str, tuple[str, ...]] = {
    "fraud_screen": ("pass", "suspect", "fraud"),
    "invoice": ("ok",),
    "charge": ("paid", "declined"),
    "wait_approval": ("approved", "rejected"),
    "provision": ("done", "failed"),
    "notify": ("ok",),
    "rollback": ("ok",),
    "complete": (),
    "reject": (),
}
TERMINAL = frozenset({"complete", "reject"})


@dataclass(frozen=True)
class Step:
    name: str
    action: str
    transitions: tuple[tuple[str, str], ...]  # (on result, to step)

    def next(self, result: str) -> str | None:
        for on, to in self.transitions:
            if on == result:
                return to
        for on, to in self.transitions:
            if on == "*":
                return to
        return None


@dataclass(frozen=True)
class Flow:
    start: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def actions(self) -> set[str]:
        return {s.action for s in self.steps}

    def to_json(self) -> str:
        return json.dumps(
            {
                "start": self.start,
                "steps": [
                    {
                        "name": s.name,
                        "action": s.action,
                        "transitions": [{"on": on, "to": to} for on, to in s.transitions],
                    }
                    for s in self.steps
                ],
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> Flow:
        d: dict[str, Any] = json.loads(text)
        return Flow(
            d["start"],
            tuple(
                Step(
                    s["name"],
                    s["action"],
                    tuple((t["on"], t["to"]) for t in s["transitions"]),
                )
                for s in d["steps"]
            ),
        )


def validate(flow: Flow, field: str = "steps") -> Flow:
    """Raise ValidationError naming the first problem; return the flow."""
    if not flow.steps:
        raise ValidationError(field, "a workflow has at least one step")
    if len(flow.steps) > 50:
        raise ValidationError(field, "at most 50 steps")
    names: dict[str, Step] = {}
    for i, s in enumerate(flow.steps):
        f = f"{field}[{i}]"
        if not s.name or len(s.name) > 64 or not s.name.replace("_", "").isalnum():
            raise ValidationError(f"{f}.name", "must be 1 to 64 letters, digits or _")
        if s.name in names:
            raise ValidationError(f"{f}.name", f"step {s.name!r} is defined twice")
        names[s.name] = s
        if s.action not in ACTIONS:
            raise ValidationError(
                f"{f}.action", f"unknown action {s.action!r}; one of {', '.join(ACTIONS)}"
            )
    if flow.start not in names:
        raise ValidationError("start", f"no step named {flow.start!r}")
    for i, s in enumerate(flow.steps):
        f = f"{field}[{i}]"
        results = ACTIONS[s.action]
        if s.action in TERMINAL:
            if s.transitions:
                raise ValidationError(f"{f}.transitions", f"{s.action} ends the order")
            continue
        seen: set[str] = set()
        for j, (on, to) in enumerate(s.transitions):
            if on != "*" and on not in results:
                raise ValidationError(
                    f"{f}.transitions[{j}].on",
                    f"{s.action} gives one of {', '.join(results)} (or * for any)",
                )
            if on in seen:
                raise ValidationError(f"{f}.transitions[{j}].on", f"{on!r} is given twice")
            seen.add(on)
            if to not in names:
                raise ValidationError(f"{f}.transitions[{j}].to", f"no step named {to!r}")
        for r in results:
            if s.next(r) is None:
                raise ValidationError(
                    f"{f}.transitions", f"step {s.name!r} has no transition for result {r!r}"
                )
    # reachability and no cycles (so every path ends)
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            loop = " -> ".join((*trail[trail.index(name) :], name))
            raise ValidationError(field, f"the workflow loops: {loop}; every path must end")
        state[name] = 1
        for _on, to in names[name].transitions:
            visit(to, (*trail, name))
        state[name] = 2

    visit(flow.start, ())
    for s in flow.steps:
        if s.name not in state:
            raise ValidationError(field, f"step {s.name!r} cannot be reached from the start")
    return flow


def _flow(start: str, *steps: tuple[str, str, dict[str, str]]) -> Flow:
    return validate(
        Flow(start, tuple(Step(n, a, tuple(t.items())) for n, a, t in steps)), "default"
    )


_END: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("complete", "complete", {}),
    ("reject", "reject", {}),
)


def _paid_flow(provision: bool) -> Flow:
    """placed -> fraud screening -> (suspect: wait for approval) -> invoice ->
    charge -> provision -> complete; declined -> reject; provisioning failed
    -> roll back (refund) -> reject."""
    return _flow(
        "screen",
        ("screen", "fraud_screen", {"pass": "invoice", "suspect": "approval", "fraud": "reject"}),
        ("approval", "wait_approval", {"approved": "invoice", "rejected": "reject"}),
        ("invoice", "invoice", {"*": "charge"}),
        (
            "charge",
            "charge",
            {"paid": "provision" if provision else "complete", "declined": "reject"},
        ),
        *(
            (
                ("provision", "provision", {"done": "complete", "failed": "rollback"}),
                ("rollback", "rollback", {"*": "reject"}),
            )
            if provision
            else ()
        ),
        *_END,
    )


def default_flow(order_type: str) -> Flow:
    """The built-in workflow of an order type (PRODUCT.md's example)."""
    if order_type in ("sales", "upgrade", "downgrade", "resource", "renewal"):
        return _paid_flow(True)
    if order_type == "payment":
        return _paid_flow(False)
    # cancellation and transfer: nothing to charge (a cancellation's refund is
    # part of its effect); provisioning deletes/moves the services
    return _flow(
        "provision",
        ("provision", "provision", {"done": "complete", "failed": "reject"}),
        *_END,
    )
