"""Requests to the simulator, validated: SP-API error answers, the orders query that travels in
pagination tokens, the confirmShipment body (ordersV0.json ConfirmShipmentRequest) and the control
API's bodies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ordersync.simulator.clock import parse_iso
from ordersync.simulator.orders import Order, Package, Version

INVALID_INPUT_MESSAGE = "The input you have submitted is not valid. Please check your input and try again."
ACCESS_DENIED_MESSAGE = "Access to requested resource is denied."
QUOTA_EXCEEDED_MESSAGE = "You exceeded your quota for the requested resource."


class SpApiError(Exception):
    """An SP-API error answer: status and one error object."""

    def __init__(self, status: int, code: str, message: str, details: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"errors": [{"code": self.code, "message": self.message, "details": self.details}]}


def invalid_input(details: str, message: str = INVALID_INPUT_MESSAGE) -> SpApiError:
    return SpApiError(400, "InvalidInput", message, details)


def not_found(order_id: str) -> SpApiError:
    return SpApiError(404, "NotFound", "Order not found.", f"No order {order_id} for this selling partner.")


@dataclass(frozen=True)
class OrdersQuery:
    """A getOrders/searchOrders query after validation; it travels inside the pagination token."""

    by: Literal["updated", "created"]
    after: float
    before: float
    as_of: float
    marketplaces: tuple[str, ...]
    statuses: tuple[str, ...]
    channels: tuple[str, ...]
    order_ids: tuple[str, ...]
    limit: int
    issued_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "after": self.after,
            "before": self.before,
            "as_of": self.as_of,
            "marketplaces": list(self.marketplaces),
            "statuses": list(self.statuses),
            "channels": list(self.channels),
            "order_ids": list(self.order_ids),
            "limit": self.limit,
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OrdersQuery:
        return cls(
            by="created" if raw["by"] == "created" else "updated",
            after=float(raw["after"]),
            before=float(raw["before"]),
            as_of=float(raw["as_of"]),
            marketplaces=tuple(raw["marketplaces"]),
            statuses=tuple(raw["statuses"]),
            channels=tuple(raw["channels"]),
            order_ids=tuple(raw["order_ids"]),
            limit=int(raw["limit"]),
            issued_at=float(raw["issued_at"]),
        )

    def accept(self, order: Order, version: Version) -> bool:
        return (
            order.marketplace.marketplace_id in self.marketplaces
            and (not self.statuses or version.snapshot.status in self.statuses)
            and (not self.channels or order.channel in self.channels)
            and (not self.order_ids or order.order_id in self.order_ids)
        )


# --- control API request bodies -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NewOrderItem(_Strict):
    sku: str | None = Field(None, description="A catalogue SKU; omitted: a random catalogue product.")
    unmapped: bool = Field(False, description="An item whose SKU the back-office does not know.")
    quantity: Annotated[int, Field(ge=1, le=1000)] = 1


class NewOrder(_Strict):
    """``POST /_sim/orders``: every field optional."""

    seller_id: str | None = None
    marketplace_id: str | None = None
    order_id: Annotated[str, Field(pattern=r"^\d{3}-\d{7}-\d{7}$")] | None = None
    fulfillment_channel: Literal["MFN", "AFN"] = "MFN"
    items: tuple[NewOrderItem, ...] | None = None
    item_count: Annotated[int, Field(ge=1, le=1000)] | None = None
    pending_s: Annotated[float, Field(ge=1)] | None = Field(
        None, description="Pending this long, then Unshipped."
    )
    afn_ship_after_s: Annotated[float, Field(ge=1)] | None = None
    preorder_release_s: Annotated[float, Field(ge=1)] | None = Field(
        None, description="A pre-order: PendingAvailability this long, then Pending, then Unshipped."
    )
    missing_address: bool = False
    ship_within_s: Annotated[float, Field(ge=1)] | None = Field(
        None,
        description="The latest ship date this long after the order (after a pre-order's release);"
        " omitted: the seller's shortest handling time (orders.ship_within_s; two days by default).",
    )
    programs: tuple[Literal["FBM_SHIP_PLUS", "AMAZON_EASY_SHIP"], ...] = Field(
        (), description="Ship+ or Easy Ship (seller-fulfilled orders only)."
    )


class AmazonShipment(_Strict):
    """``POST /_sim/orders/{id}/amazon-shipment``: the order ships without the seller confirming it."""

    by: Literal["label", "easy-ship"] = Field(
        description="label: the seller bought the label through Amazon (Buy Shipping, Ship+), which"
        " confirms it; easy-ship: Amazon's carrier picked the package up."
    )
    carrier_code: str = "UPS"
    tracking_number: str | None = None


class ControlError(ValueError):
    """A control API request that cannot be honoured; answered 400 (or 404 for unknown orders)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def csv_values(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class ShipmentRequest:
    marketplace_id: str
    package_reference_id: str
    carrier_code: str
    carrier_name: str | None
    shipping_method: str | None
    tracking_number: str
    ship_date: float
    items: tuple[tuple[str, int], ...]

    def package(self, confirmed_at: int) -> Package:
        return Package(
            self.package_reference_id,
            self.carrier_code,
            self.carrier_name,
            self.shipping_method,
            self.tracking_number,
            self.ship_date,
            self.items,
            confirmed_at,
        )


def parse_confirm_shipment(body: Any) -> ShipmentRequest:
    """Validate a ConfirmShipmentRequest (ordersV0.json) or raise Amazon's 400."""
    if not isinstance(body, dict):
        raise invalid_input("The body must be a ConfirmShipmentRequest JSON object.")
    marketplace_id = body.get("marketplaceId")
    detail = body.get("packageDetail")
    if not isinstance(marketplace_id, str) or not marketplace_id:
        raise invalid_input("marketplaceId is required.")
    if not isinstance(detail, dict):
        raise invalid_input("packageDetail is required.")
    missing = [
        name
        for name in ("packageReferenceId", "carrierCode", "trackingNumber", "shipDate", "orderItems")
        if detail.get(name) in (None, "", [])
    ]
    if missing:
        raise invalid_input(f"packageDetail is missing {', '.join(missing)}.")
    reference = detail["packageReferenceId"]
    if not isinstance(reference, str) or not reference.isdigit() or int(reference) <= 0:
        raise invalid_input("packageReferenceId must be a positive number, as a string.")
    for name in ("carrierCode", "trackingNumber", "carrierName", "shippingMethod"):
        if name in detail and not isinstance(detail[name], str):
            raise invalid_input(f"{name} must be a string.")
    if detail["carrierCode"] == "Other" and not detail.get("carrierName"):
        raise invalid_input("carrierName is required when carrierCode is Other.")
    ship_date_raw = detail["shipDate"]
    try:
        if not isinstance(ship_date_raw, str):
            raise ValueError(ship_date_raw)
        ship_date = parse_iso(ship_date_raw)
    except ValueError:
        # The model's sandbox example for a non-ISO shipDate answers exactly this.
        raise SpApiError(400, "Invalid Input", "Invalid Input", "") from None
    items = parse_package_items(detail["orderItems"])
    return ShipmentRequest(
        marketplace_id=marketplace_id,
        package_reference_id=reference,
        carrier_code=detail["carrierCode"],
        carrier_name=detail.get("carrierName"),
        shipping_method=detail.get("shippingMethod"),
        tracking_number=detail["trackingNumber"],
        ship_date=ship_date,
        items=items,
    )


def parse_package_items(raw_items: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw_items, list):
        raise invalid_input("orderItems must be a list.")
    items: list[tuple[str, int]] = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise invalid_input("Each order item is an object.")
        item_id, quantity = raw.get("orderItemId"), raw.get("quantity")
        if not isinstance(item_id, str) or not item_id:
            raise invalid_input("orderItemId is required for every order item.")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise invalid_input(f"orderItemId {item_id}: quantity must be a positive integer.")
        items.append((item_id, quantity))
    ids = [item_id for item_id, _ in items]
    if len(set(ids)) != len(ids):
        raise invalid_input("An orderItemId is listed twice.")
    return tuple(items)
