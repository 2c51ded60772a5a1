"""Card data never enters the system: any string that holds a card number is
refused.

The dispatcher applies this to every string parameter of every operation, so
a PAN pasted into a name, a note or a reason is refused before anything is
stored or logged; the fault never repeats the value.

What counts as a card number (the rule, also in docs/api.md):

1. *Numbers*: a number is digit groups (any Unicode decimal digits) joined by
   separator runs of 1 to 3 characters that are not letters or digits: spaces
   of any kind (NBSP, thin spaces, tabs, double spaces, newlines), dots,
   slashes, dashes, underscores, any punctuation or symbol. A letter, a
   longer run, or a comma, semicolon or colon followed by white space (a
   list or sentence break: ``+49 30 1234, 2026-01-31``) ends a number.
   ``4111 1111.1111/1111``, ``4111__1111...`` and ``x4111111111111111y``
   are numbers.
2. *Candidates* of a number: every run of its consecutive whole groups of 13
   to 19 digits, and, for digits glued on, those with up to 3 digits cut off
   the outer end of an outer group longer than 4 digits
   (``04111111111111111``, ``4111 1111 1111 11112``). A number right after a
   ``+`` is a phone number: no candidate starts in its first group.
3. A candidate is a card number if it passes the Luhn check *and* starts with
   a known issuer prefix at a length that issuer uses (Visa, Mastercard, Amex,
   Discover, JCB, Diners, UnionPay, Maestro, Mir; see ``BRANDS``).

Valid IBANs (mod 97) are skipped. Dates, invoice numbers, phone numbers
written with ``+`` and IBANs pass; a bare 13-19 digit number that is
Luhn-valid with an issuer's prefix (about 1 in 13 random 16-digit numbers)
is refused, as it would be a card number.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Any

from pba_server.core.errors import ValidationError

MIN_DIGITS = 13
MAX_DIGITS = 19
MAX_GLUED = 3

# digit groups joined by 1-3 characters that are neither letters nor digits
# (\W is "not a word character"; the underscore is a word character, so it is
# added). The classes are disjoint, so the match is linear.
_NUMBER = re.compile(r"\d+(?:(?![\W_]{0,2}[,;:]\s)[\W_]{1,3}\d+)*")
_GROUP = re.compile(r"\d+")
GROUP = 4  # digits in a card's usual group
_IBAN_HINT = re.compile(r"[A-Za-z]{2}\d{2}")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:\s?[A-Za-z0-9]{4}){2,7}(?:\s?[A-Za-z0-9]{1,4})?\b")

# (first prefix, last prefix, lengths): a number starting with a prefix in
# [first, last] (compared on as many digits as the prefix has) at one of the
# lengths is that issuer's.
BRANDS: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("5018", "5018", frozenset(range(13, 20))),  # Maestro
    ("5020", "5020", frozenset(range(13, 20))),
    ("5038", "5038", frozenset(range(13, 20))),
    ("5893", "5893", frozenset(range(13, 20))),
    ("6304", "6304", frozenset(range(13, 20))),
    ("6759", "6759", frozenset(range(13, 20))),
    ("6761", "6763", frozenset(range(13, 20))),
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
)


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def issuer_prefix(digits: str) -> bool:
    """Whether ``digits`` has a known issuer's prefix at a length it uses."""
    n = len(digits)
    for first, last, lengths in BRANDS:
        if n in lengths and first <= digits[: len(first)] <= last:
            return True
    return False


def is_card_number(digits: str) -> bool:
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and issuer_prefix(digits) and luhn(digits)


def _ascii(group: str) -> str:
    if group.isascii():
        return group
    return "".join(str(unicodedata.decimal(c)) for c in group)


def _candidates(groups: list[str], *, phone: bool) -> Any:
    """Rule 2: runs of whole groups, with up to MAX_GLUED digits cut off at
    the ends of an outer group longer than a card's usual group of 4."""
    for i in range(1 if phone else 0, len(groups)):
        joined = ""
        for j in range(i, len(groups)):
            joined += groups[j]
            if len(joined) > MAX_DIGITS + MAX_GLUED:
                break
            left_max = MAX_GLUED if len(groups[i]) > GROUP else 0
            right_max = MAX_GLUED if len(groups[j]) > GROUP else 0
            for cut_left in range(left_max + 1):
                for cut_right in range(min(right_max, MAX_GLUED - cut_left) + 1):
                    cand = joined[cut_left : len(joined) - cut_right]
                    if MIN_DIGITS <= len(cand) <= MAX_DIGITS:
                        yield cand


def _without_ibans(value: str) -> str:
    """Blank out valid IBANs (mod 97): their digits are a bank account's."""

    def blank(m: re.Match[str]) -> str:
        compact = re.sub(r"\s", "", m.group()).upper()
        moved = compact[4:] + compact[:4]
        digits = "".join(str(int(c, 36)) for c in moved)
        return " " * len(m.group()) if int(digits) % 97 == 1 else m.group()

    return _IBAN.sub(blank, value) if _IBAN_HINT.search(value) else value


def find_card_number(value: str) -> bool:
    """Whether ``value`` holds a card number (the rule in the module doc)."""
    value = _without_ibans(value)
    for m in _NUMBER.finditer(value):
        groups = [_ascii(g) for g in _GROUP.findall(m.group())]
        if sum(len(g) for g in groups) < MIN_DIGITS:
            continue
        phone = value[max(m.start() - 2, 0) : m.start()].rstrip("( ").endswith("+")
        if any(is_card_number(c) for c in _candidates(groups, phone=phone)):
            return True
    return False


def refuse_card_data(field: str, value: str) -> None:
    if find_card_number(value):
        raise ValidationError(
            field, "looks like a card number: send the gateway's token, never card data"
        )


def refuse_in(field: str, value: Any) -> None:
    """Walk a coerced argument (strings, lists, dataclasses) and refuse card data."""
    if isinstance(value, str):
        refuse_card_data(field, value)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            refuse_in(f"{field}[{i}]", v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            refuse_in(f"{field}.{f.name}", getattr(value, f.name))
