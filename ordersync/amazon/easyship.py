"""Easy Ship API 2022-03-23 (``easyShip_2022-03-23.json``): Amazon's carrier picks a seller's package up
(or the seller drops it off) in a handover slot; Amazon makes the label and the tax invoice, and the
order is shipped by scheduling the package, never by confirmShipment.

The request bodies and the parsing of Amazon's answers, as pure functions; :class:`SpApiClient` sends
them under the rate limiter (each operation 1 request a second, burst 5). Units are Amazon's: lengths
in centimetres (``cm``, at least 0.01), weights in grams (``g``, at least 11).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

HandoverMethod = Literal["PICKUP", "DROPOFF"]
LabelFormat = Literal["PDF", "ZPL"]

#: Amazon's floors (Dimension.minimum, WeightValue.minimum): below them a request is refused as invalid.
MIN_DIMENSION_CM = Decimal("0.01")
MIN_WEIGHT_G = Decimal(11)


@dataclass(frozen=True)
class PackageSize:
    """A package's dimensions (cm) and weight (g), as the packer measured them."""

    length_cm: Decimal
    width_cm: Decimal
    height_cm: Decimal
    weight_g: Decimal

    def problems(self) -> list[str]:
        """What Amazon's model refuses in this size (empty: acceptable), in words a packer understands."""
        found = [
            f"{name} {value} cm is below Amazon's minimum of {MIN_DIMENSION_CM} cm"
            for name, value in (
                ("length", self.length_cm),
                ("width", self.width_cm),
                ("height", self.height_cm),
            )
            if value < MIN_DIMENSION_CM
        ]
        if self.weight_g < MIN_WEIGHT_G:
            found.append(f"weight {self.weight_g} g is below Amazon's minimum of {MIN_WEIGHT_G} g")
        return found

    def dimensions(self) -> dict[str, Any]:
        return {
            "length": float(self.length_cm),
            "width": float(self.width_cm),
            "height": float(self.height_cm),
            "unit": "cm",
        }

    def weight(self) -> dict[str, Any]:
        return {"value": float(self.weight_g), "unit": "g"}


@dataclass(frozen=True)
class HandoverSlot:
    """A time slot to hand a package over to Amazon's carrier."""

    slot_id: str
    start: datetime | None = None
    end: datetime | None = None
    handover_method: HandoverMethod | None = None

    def as_amazon(self) -> dict[str, Any]:
        # Amazon needs only the slot id to schedule; the rest describes the slot.
        return {"slotId": self.slot_id}


@dataclass(frozen=True)
class ScheduledPackage:
    """A package Amazon scheduled for an order (getScheduledPackage, createScheduledPackage)."""

    amazon_order_id: str
    package_id: str | None
    slot: HandoverSlot
    status: str | None
    invoice_number: str | None
    invoice_date: datetime | None
    tracking_id: str | None


@dataclass(frozen=True)
class PackageRequest:
    """One order's package to schedule: its slot, and optionally its items and label identifier."""

    amazon_order_id: str
    slot: HandoverSlot
    order_item_ids: tuple[str, ...] = ()
    identifier: str | None = None


@dataclass(frozen=True)
class RejectedOrder:
    """An order createScheduledPackageBulk did not schedule, with Amazon's error."""

    amazon_order_id: str
    code: str
    message: str


@dataclass(frozen=True)
class BulkSchedule:
    """What createScheduledPackageBulk did: the packages scheduled, the orders refused, and where the
    labels of the scheduled ones can be downloaded (a ZIP, when Amazon gives one)."""

    scheduled: tuple[ScheduledPackage, ...]
    rejected: tuple[RejectedOrder, ...]
    documents_url: str | None


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def slots_request(marketplace_id: str, amazon_order_id: str, size: PackageSize) -> dict[str, Any]:
    """listHandoverSlots' body."""
    return {
        "marketplaceId": marketplace_id,
        "amazonOrderId": amazon_order_id,
        "packageDimensions": size.dimensions(),
        "packageWeight": size.weight(),
    }


def parse_slot(raw: Any) -> HandoverSlot:
    if not isinstance(raw, dict) or not isinstance(raw.get("slotId"), str):
        raise ValueError(f"not a time slot: {raw!r}")
    method = raw.get("handoverMethod")
    return HandoverSlot(
        slot_id=raw["slotId"],
        start=_time(raw.get("startTime")),
        end=_time(raw.get("endTime")),
        handover_method=method if method in ("PICKUP", "DROPOFF") else None,
    )


def parse_slots(body: dict[str, Any]) -> tuple[HandoverSlot, ...]:
    """listHandoverSlots' answer: the slots, earliest first."""
    slots = tuple(parse_slot(raw) for raw in body.get("timeSlots") or ())
    return tuple(sorted(slots, key=lambda slot: (slot.start is None, slot.start or datetime.min)))


def package_details(
    slot: HandoverSlot, order_item_ids: tuple[str, ...] = (), identifier: str | None = None
) -> dict[str, Any]:
    """A package's details for createScheduledPackage(Bulk): its slot, items and label identifier."""
    details: dict[str, Any] = {"packageTimeSlot": slot.as_amazon()}
    if order_item_ids:
        details["packageItems"] = [{"orderItemId": item} for item in order_item_ids]
    if identifier:
        details["packageIdentifier"] = identifier
    return details


def parse_package(raw: Any) -> ScheduledPackage:
    """A Package of Amazon's answers."""
    if not isinstance(raw, dict):
        raise ValueError(f"not a scheduled package: {raw!r}")
    package_id = raw.get("scheduledPackageId") or {}
    invoice = raw.get("invoice") or {}
    tracking = raw.get("trackingDetails") or {}
    order_id = package_id.get("amazonOrderId")
    if not isinstance(order_id, str):
        raise ValueError(f"a scheduled package without its order id: {raw!r}")
    return ScheduledPackage(
        amazon_order_id=order_id,
        package_id=package_id.get("packageId"),
        slot=parse_slot(raw.get("packageTimeSlot")),
        status=raw.get("packageStatus"),
        invoice_number=invoice.get("invoiceNumber"),
        invoice_date=_time(invoice.get("invoiceDate")),
        tracking_id=tracking.get("trackingId"),
    )


def parse_bulk(body: dict[str, Any]) -> BulkSchedule:
    """createScheduledPackageBulk's answer."""
    rejected = []
    for raw in body.get("rejectedOrders") or ():
        error = raw.get("error") or {}
        rejected.append(
            RejectedOrder(
                amazon_order_id=str(raw.get("amazonOrderId")),
                code=str(error.get("code") or "Rejected"),
                message=str(error.get("message") or "refused by Amazon"),
            )
        )
    return BulkSchedule(
        scheduled=tuple(parse_package(raw) for raw in body.get("scheduledPackages") or ()),
        rejected=tuple(rejected),
        documents_url=body.get("printableDocumentsUrl"),
    )
