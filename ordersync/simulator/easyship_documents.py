"""The POST_EASYSHIP_DOCUMENTS feed's documents: the messages it takes and the PDFs it makes.

Input, as Amazon documents it (docs "Get shipping labels, invoice, and warranty documents", schema
EasyshipDocuments.xsd): an AmazonEnvelope of MessageType ``EasyShipDocument`` whose messages each
name an ``AmazonOrderID`` and one or more ``DocumentType`` (ShippingLabel, Invoice, Warranty).

Output: Amazon says the processing report gives a ``ReportReferenceId`` used to download the documents,
and that the documents are the restricted report type ``GET_EASYSHIP_DOCUMENTS`` (PDF), whose
getReportDocument needs a Restricted Data Token (docs "Easy Ship Reports"). The report element's place
is not documented; the simulator's own, documented choice: each successful message gets a
``<EasyShipDocumentResult>`` (MessageID, AmazonOrderID, ReportReferenceId) in the ProcessingReport, and
the ReportReferenceId is the reportDocumentId of one PDF (a page per document type asked, each carrying
the Amazon order id as text), fetched with getReportDocument and an RDT (scenario ``pii_requires_rdt``;
never with getFeedDocument).
"""

from __future__ import annotations

from dataclasses import dataclass

from fpdf import FPDF
from lxml import etree

from ordersync.simulator.clock import epoch_to_iso

DOCUMENT_TYPES = ("ShippingLabel", "Invoice", "Warranty")
EASYSHIP_DOCUMENTS_FEED = "POST_EASYSHIP_DOCUMENTS"
MESSAGE_TYPE = "EasyShipDocument"
#: The order has no scheduled Easy Ship package (the simulator's result code).
CODE_NOT_SCHEDULED = "18040"
#: A warranty was asked for a package scheduled without serial numbers.
CODE_NO_WARRANTY = "18041"


class DocumentMessageError(ValueError):
    """An EasyShipDocument message that does not follow the schema."""


@dataclass(frozen=True)
class DocumentRequest:
    message_id: int
    order_id: str
    document_types: tuple[str, ...]


def parse_document_request(message_id: int, element: etree._Element) -> DocumentRequest:
    """One EasyShipDocument message, or :class:`DocumentMessageError`."""
    local = etree.QName(element).localname
    if local != MESSAGE_TYPE:
        raise DocumentMessageError("The message has no EasyShipDocument element.")
    order_id = ""
    types: list[str] = []
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name, text = etree.QName(child).localname, (child.text or "").strip()
        if name == "AmazonOrderID":
            order_id = text
        elif name == "DocumentType":
            if text not in DOCUMENT_TYPES:
                raise DocumentMessageError(
                    f"DocumentType {text!r} is not one of {', '.join(DOCUMENT_TYPES)}."
                )
            types.append(text)
    if not order_id:
        raise DocumentMessageError("AmazonOrderID is required.")
    if not types:
        raise DocumentMessageError("At least one DocumentType is required.")
    return DocumentRequest(message_id, order_id, tuple(dict.fromkeys(types)))


@dataclass(frozen=True)
class PackageFacts:
    """What the documents print about one scheduled package."""

    order_id: str
    package_id: str
    tracking_id: str
    invoice_number: str
    invoice_date: int
    seller_id: str
    slot_start: int
    weight_g: float
    items: tuple[tuple[str, str, int, tuple[str, ...]], ...]
    """(order item id, title, quantity, serial numbers)."""


def documents_pdf(facts: PackageFacts, document_types: tuple[str, ...]) -> bytes:
    """A small real PDF: one page per document type, each naming the Amazon order id."""
    pdf = FPDF(format=(105, 148))  # A6, in millimetres
    pdf.set_creator("ordersync simulator")
    pdf.set_title(f"Easy Ship documents {facts.order_id}")
    for kind in document_types:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, _TITLES[kind], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        for line in _lines(facts, kind):
            pdf.multi_cell(0, 4, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


_TITLES = {
    "ShippingLabel": "Amazon Easy Ship - Shipping Label",
    "Invoice": "Tax Invoice",
    "Warranty": "Warranty",
}


def _lines(facts: PackageFacts, kind: str) -> list[str]:
    lines = [f"Order ID: {facts.order_id}", f"Package: {facts.package_id}"]
    if kind == "ShippingLabel":
        lines += [
            f"Tracking ID: {facts.tracking_id}",
            f"Weight: {facts.weight_g:g} g",
            f"Handover slot: {epoch_to_iso(facts.slot_start)}",
        ]
    elif kind == "Invoice":
        lines += [
            f"Invoice Number: {facts.invoice_number}",
            f"Invoice Date: {epoch_to_iso(facts.invoice_date)}",
        ]
        lines += [f"Sold By: {facts.seller_id}"]
        lines += [f"{quantity} x {title} ({item_id})" for item_id, title, quantity, _ in facts.items]
    else:
        lines += [
            f"{title}: serial numbers {', '.join(serials)}" for _, title, _, serials in facts.items if serials
        ]
    return lines


def _latin1(text: str) -> str:
    """The core PDF fonts are Latin-1: anything else is replaced."""
    return text.encode("latin-1", "replace").decode("latin-1")
