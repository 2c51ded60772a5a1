"""Invoice documents: HTML, and a plain single-font PDF written by hand.

The PDF is deliberately minimal (PDF 1.4, one built-in Helvetica font,
WinAnsi text, as many A4 pages as the lines need) so that no rendering
library is needed; characters outside Latin-1 are shown as "?".
"""

from __future__ import annotations

import base64
import html as _html
from dataclasses import dataclass
from decimal import Decimal

from pba_server.accounts.models import Account, Contact
from pba_server.billing.types import InvoiceInfo


@dataclass(frozen=True)
class Party:
    name: str
    lines: tuple[str, ...]
    tax_id: str | None

    @classmethod
    def of(cls, acc: Account, contact: Contact | None) -> Party:
        parts: list[str] = []
        if contact is not None:
            parts += [x for x in (contact.address,) if x]
            city = " ".join(x for x in (contact.postal_code, contact.city) if x)
            if city:
                parts.append(city)
            if contact.state:
                parts.append(contact.state)
            parts.append(contact.email)
        if acc.country:
            parts.append(acc.country)
        return cls(name=acc.name, lines=tuple(parts), tax_id=acc.tax_id)


def _title(inv: InvoiceInfo) -> str:
    return f"Invoice {inv.number}" if inv.number else f"Draft invoice {inv.id}"


def _tax_summary(inv: InvoiceInfo) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """(tax name and rate, net, tax, total) per rate."""
    out: dict[str, list[Decimal]] = {}
    for ln in inv.lines:
        key = f"{ln.tax_name or 'No tax'} {ln.tax_rate.normalize():f}%"
        acc = out.setdefault(key, [Decimal(0), Decimal(0), Decimal(0)])
        acc[0] += ln.net
        acc[1] += ln.tax
        acc[2] += ln.total
    return [(k, v[0], v[1], v[2]) for k, v in out.items()]


def html(inv: InvoiceInfo, seller: Party, buyer: Party) -> str:
    e = _html.escape
    cur = inv.currency

    def party(title: str, p: Party) -> str:
        rows = "".join(f"<div>{e(x)}</div>" for x in p.lines)
        tax = f"<div>Tax id: {e(p.tax_id)}</div>" if p.tax_id else ""
        return f'<div class="party"><h2>{title}</h2><strong>{e(p.name)}</strong>{rows}{tax}</div>'

    lines = "".join(
        "<tr>"
        f"<td>{ln.position}</td><td>{e(ln.description)}"
        + (f"<br><small>{ln.period_start} to {ln.period_end}</small>" if ln.period_start else "")
        + f"</td><td>{ln.quantity}</td><td>{ln.unit_price}</td><td>{ln.discount}</td>"
        f"<td>{ln.tax_rate.normalize():f}%</td><td>{ln.net}</td><td>{ln.tax}</td><td>{ln.total}</td>"
        "</tr>"
        for ln in inv.lines
    )
    taxes = "".join(
        f"<tr><td>{e(k)}</td><td>{n}</td><td>{t}</td><td>{g}</td></tr>"
        for k, n, t, g in _tax_summary(inv)
    )
    notes = f'<p class="notes">{e(inv.notes)}</p>' if inv.notes else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{e(_title(inv))}</title>'
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px}.party{display:inline-block;"
        "vertical-align:top;width:45%}</style></head><body>"
        f"<h1>{e(_title(inv))}</h1>"
        + party("Seller", seller)
        + party("Bill to", buyer)
        + f"<p>Issued: {inv.issued_at.date() if inv.issued_at else '-'} &middot; "
        f"Due: {inv.due_date or '-'} &middot; Currency: {cur} &middot; Status: {inv.status}</p>"
        "<table><thead><tr><th>#</th><th>Description</th><th>Qty</th><th>Unit price</th>"
        "<th>Discount</th><th>Tax rate</th><th>Net</th><th>Tax</th><th>Total</th></tr></thead>"
        f"<tbody>{lines}</tbody></table>"
        "<h2>Tax</h2><table><thead><tr><th>Rate</th><th>Net</th><th>Tax</th><th>Total</th>"
        f"</tr></thead><tbody>{taxes}</tbody></table>"
        f'<table class="totals"><tr><th>Subtotal</th><td>{inv.subtotal} {cur}</td></tr>'
        f"<tr><th>Tax</th><td>{inv.tax_total} {cur}</td></tr>"
        f"<tr><th>Total</th><td>{inv.total} {cur}</td></tr>"
        f"<tr><th>Paid</th><td>{inv.paid} {cur}</td></tr>"
        f"<tr><th>Credited</th><td>{inv.credited} {cur}</td></tr>"
        f"<tr><th>Amount due</th><td>{inv.outstanding} {cur}</td></tr></table>"
        f"{notes}</body></html>\n"
    )


def text_lines(inv: InvoiceInfo, seller: Party, buyer: Party) -> list[str]:
    cur = inv.currency
    out = [_title(inv), "", f"Seller: {seller.name}", *seller.lines]
    if seller.tax_id:
        out.append(f"Tax id: {seller.tax_id}")
    out += ["", f"Bill to: {buyer.name}", *buyer.lines]
    if buyer.tax_id:
        out.append(f"Tax id: {buyer.tax_id}")
    out += [
        "",
        f"Issued: {inv.issued_at.date() if inv.issued_at else '-'}   Due: {inv.due_date or '-'}",
        "",
    ]
    for ln in inv.lines:
        out.append(f"{ln.position}. {ln.description}")
        out.append(
            f"    {ln.quantity} x {ln.unit_price} - {ln.discount}   net {ln.net}   "
            f"tax {ln.tax_rate.normalize():f}% {ln.tax}   total {ln.total} {cur}"
        )
    out.append("")
    for k, n, t, g in _tax_summary(inv):
        out.append(f"{k}: net {n}  tax {t}  total {g} {cur}")
    out += [
        "",
        f"Subtotal: {inv.subtotal} {cur}",
        f"Tax: {inv.tax_total} {cur}",
        f"Total: {inv.total} {cur}",
        f"Paid: {inv.paid} {cur}   Credited: {inv.credited} {cur}",
        f"Amount due: {inv.outstanding} {cur}",
    ]
    if inv.notes:
        out += ["", *inv.notes.splitlines()]
    return out


def _pdf_text(s: str) -> bytes:
    raw = s.encode("latin-1", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


LINES_PER_PAGE = 60


def pdf(lines: list[str]) -> bytes:
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, max(len(lines), 1), LINES_PER_PAGE)]
    n = len(pages)
    # objects: 1 catalog, 2 pages, 3 font, then per page: page object and content stream
    objs: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(n))
        + f"] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, page in enumerate(pages):
        stream = (
            b"BT /F1 9 Tf 12 TL 50 800 Td "
            + b" ".join(b"(" + _pdf_text(t) + b") '" for t in page)
            + b" ET"
        )
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> " + f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def pdf_base64(inv: InvoiceInfo, seller: Party, buyer: Party) -> str:
    return base64.b64encode(pdf(text_lines(inv, seller, buyer))).decode()
