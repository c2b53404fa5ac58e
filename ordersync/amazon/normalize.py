"""Pure functions turning Amazon's JSON (Orders v0 and 2026-01-01) into ordersync's order model.

Stages after download never see which API version a channel uses: both become
:class:`~ordersync.schemas.events.AmazonOrder` with :class:`~ordersync.schemas.events.AmazonOrderItem`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ordersync.errors import AmazonRejected
from ordersync.schemas.events import (
    EASY_SHIP,
    Address,
    AmazonOrder,
    AmazonOrderItem,
    AssociatedOrder,
    Money,
    OrderStatus,
)

#: 2026-01-01 fulfillment statuses -> the v0 OrderStatus names ordersync uses throughout.
STATUS_FROM_2026: dict[str, OrderStatus] = {
    "PENDING_AVAILABILITY": "PendingAvailability",
    "PENDING": "Pending",
    "UNSHIPPED": "Unshipped",
    "PARTIALLY_SHIPPED": "PartiallyShipped",
    "SHIPPED": "Shipped",
    "CANCELLED": "Canceled",
    "UNFULFILLABLE": "Unfulfillable",
}
STATUS_TO_2026: dict[OrderStatus, str] = {v: k for k, v in STATUS_FROM_2026.items()}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _money_v0(raw: dict[str, Any] | None) -> Money | None:
    if not raw or raw.get("Amount") is None:
        return None
    return Money(currency=raw["CurrencyCode"], amount=Decimal(str(raw["Amount"])))


def _money_2026(raw: dict[str, Any] | None) -> Money | None:
    if not raw or raw.get("amount") is None:
        return None
    return Money(currency=raw["currencyCode"], amount=Decimal(str(raw["amount"])))


def _times(money: Money | None, factor: int) -> Money | None:
    return None if money is None else Money(currency=money.currency, amount=money.amount * factor)


def _address_v0(raw: dict[str, Any] | None) -> Address | None:
    if not raw:
        return None
    return Address(
        name=raw.get("Name"),
        line1=raw.get("AddressLine1"),
        line2=raw.get("AddressLine2"),
        line3=raw.get("AddressLine3"),
        city=raw.get("City"),
        county=raw.get("County") or raw.get("District"),
        state_or_region=raw.get("StateOrRegion"),
        postal_code=raw.get("PostalCode"),
        country_code=raw.get("CountryCode"),
        phone=raw.get("Phone"),
    )


def address_from_v0(raw: dict[str, Any] | None) -> Address | None:
    """A v0 ``Address`` (getOrder, getOrderAddress) as ordersync's address; None for none."""
    return _address_v0(raw)


def _address_2026(raw: dict[str, Any] | None) -> Address | None:
    if not raw:
        return None
    return Address(
        name=raw.get("name"),
        line1=raw.get("addressLine1"),
        line2=raw.get("addressLine2"),
        line3=raw.get("addressLine3"),
        city=raw.get("city"),
        county=raw.get("districtOrCounty"),
        state_or_region=raw.get("stateOrRegion"),
        postal_code=raw.get("postalCode"),
        country_code=raw.get("countryCode"),
        phone=raw.get("phone"),
    )


#: v0's order flags as Orders 2026-01-01 names the programme.
_V0_PROGRAM_FLAGS = (
    ("IsPrime", "PRIME"),
    ("IsBusinessOrder", "AMAZON_BUSINESS"),
    ("IsPremiumOrder", "PREMIUM"),
    ("IsISPU", "IN_STORE_PICK_UP"),
    ("IsIBA", "INVOICE_BY_AMAZON"),
)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def programs_from_v0(raw: dict[str, Any]) -> tuple[str, ...]:
    """The programmes a v0 order's flags say it is in (2026-01-01's names)."""
    found = [program for flag, program in _V0_PROGRAM_FLAGS if _flag(raw.get(flag))]
    if raw.get("EasyShipShipmentStatus"):
        found.append(EASY_SHIP)
    if raw.get("OrderType") == "Preorder":
        found.append("PREORDER")
    return tuple(found)


def _associated_v0(raw: dict[str, Any]) -> tuple[AssociatedOrder, ...]:
    if _flag(raw.get("IsReplacementOrder")) and raw.get("ReplacedOrderId"):
        return (
            AssociatedOrder(
                amazon_order_id=raw["ReplacedOrderId"], association_type="REPLACEMENT_ORIGINAL_ID"
            ),
        )
    return ()


def _associated_2026(raw: dict[str, Any]) -> tuple[AssociatedOrder, ...]:
    return tuple(
        AssociatedOrder(amazon_order_id=entry["orderId"], association_type=entry["associationType"])
        for entry in raw.get("associatedOrders") or []
        if entry.get("orderId") and entry.get("associationType")
    )


def order_from_v0(raw: dict[str, Any], seller_id: str) -> AmazonOrder:
    """One ``Order`` of getOrders/getOrder (v0)."""
    buyer = raw.get("BuyerInfo") or {}
    try:
        return AmazonOrder(
            amazon_order_id=raw["AmazonOrderId"],
            seller_id=seller_id,
            marketplace_id=raw["MarketplaceId"],
            order_status=raw["OrderStatus"],
            fulfillment_channel=raw.get("FulfillmentChannel", "MFN"),
            purchase_date=parse_time(raw["PurchaseDate"]),
            last_update_date=parse_time(raw["LastUpdateDate"]),
            order_total=_money_v0(raw.get("OrderTotal")),
            ship_service_level=raw.get("ShipServiceLevel"),
            shipment_service_level_category=raw.get("ShipmentServiceLevelCategory"),
            is_prime=bool(raw.get("IsPrime", False)),
            is_business_order=bool(raw.get("IsBusinessOrder", False)),
            buyer_email=buyer.get("BuyerEmail"),
            buyer_name=buyer.get("BuyerName"),
            shipping_address=_address_v0(raw.get("ShippingAddress")),
            earliest_ship_date=parse_time(raw["EarliestShipDate"]) if raw.get("EarliestShipDate") else None,
            latest_ship_date=parse_time(raw["LatestShipDate"]) if raw.get("LatestShipDate") else None,
            earliest_delivery_date=parse_time(raw["EarliestDeliveryDate"])
            if raw.get("EarliestDeliveryDate")
            else None,
            latest_delivery_date=parse_time(raw["LatestDeliveryDate"])
            if raw.get("LatestDeliveryDate")
            else None,
            items=None,
            api_version="v0",
            programs=programs_from_v0(raw),
            associated_orders=_associated_v0(raw),
        )
    except (KeyError, ValueError) as exc:
        raise AmazonRejected("getOrders", 200, "UnexpectedResponse", f"order not understood: {exc}") from exc


def item_from_v0(raw: dict[str, Any]) -> AmazonOrderItem:
    """One ``OrderItem`` of getOrderItems (v0)."""
    tax_collection = raw.get("TaxCollection") or {}
    buyer_info = raw.get("BuyerInfo") or {}
    return AmazonOrderItem(
        order_item_id=raw["OrderItemId"],
        asin=raw["ASIN"],
        seller_sku=raw.get("SellerSKU"),
        title=raw.get("Title"),
        quantity_ordered=int(raw["QuantityOrdered"]),
        quantity_shipped=int(raw.get("QuantityShipped") or 0),
        item_price=_money_v0(raw.get("ItemPrice")),
        item_tax=_money_v0(raw.get("ItemTax")),
        shipping_price=_money_v0(raw.get("ShippingPrice")),
        shipping_tax=_money_v0(raw.get("ShippingTax")),
        shipping_discount=_money_v0(raw.get("ShippingDiscount")),
        promotion_discount=_money_v0(raw.get("PromotionDiscount")),
        tax_collection_model=tax_collection.get("Model"),
        is_gift=str(raw.get("IsGift", "false")).lower() == "true",
        gift_wrap_price=_money_v0(buyer_info.get("GiftWrapPrice")),
        gift_wrap_tax=_money_v0(buyer_info.get("GiftWrapTax")),
        gift_message=buyer_info.get("GiftMessageText"),
        buyer_requested_cancel=str(
            (raw.get("BuyerRequestedCancel") or {}).get("IsBuyerRequestedCancel", "false")
        ).lower()
        == "true",
        programs=tuple((raw.get("AmazonPrograms") or {}).get("Programs") or ()),
    )


def _breakdown(proceeds: dict[str, Any] | None, kind: str) -> Money | None:
    for part in (proceeds or {}).get("breakdowns") or []:
        if part.get("type") == kind:
            return _money_2026(part.get("subtotal"))
    return None


def item_from_2026(raw: dict[str, Any]) -> AmazonOrderItem:
    """One ``OrderItem`` embedded in a searchOrders/getOrder (2026-01-01) order."""
    product = raw.get("product") or {}
    quantity = int(raw["quantityOrdered"])
    unit_price = _money_2026((product.get("price") or {}).get("unitPrice"))
    proceeds = raw.get("proceeds")
    fulfillment = raw.get("fulfillment") or {}
    gift_option = (fulfillment.get("packing") or {}).get("giftOption")
    collections = (raw.get("tax") or {}).get("taxCollections") or []
    cancellation = (raw.get("cancellation") or {}).get("cancellationRequest") or {}
    discount = _breakdown(proceeds, "DISCOUNT")
    return AmazonOrderItem(
        order_item_id=raw["orderItemId"],
        asin=product.get("asin") or "UNKNOWN",
        seller_sku=product.get("sellerSku"),
        title=product.get("title"),
        quantity_ordered=quantity,
        quantity_shipped=int(fulfillment.get("quantityFulfilled") or 0),
        item_price=_times(unit_price, quantity),
        item_tax=_breakdown(proceeds, "TAX"),
        shipping_price=_breakdown(proceeds, "SHIPPING"),
        promotion_discount=None
        if discount is None
        else Money(currency=discount.currency, amount=abs(discount.amount)),
        tax_collection_model="MarketplaceFacilitator"
        if any(c.get("model") == "MARKETPLACE_FACILITATOR" for c in collections)
        else None,
        is_gift=gift_option is not None,
        gift_wrap_price=_breakdown(proceeds, "GIFT_WRAP"),
        gift_message=(gift_option or {}).get("giftMessage"),
        buyer_requested_cancel=cancellation.get("requester") == "BUYER",
    )


def order_from_2026(raw: dict[str, Any], seller_id: str) -> AmazonOrder:
    """One ``Order`` of searchOrders/getOrder (2026-01-01), with its embedded items."""
    try:
        fulfillment = raw.get("fulfillment") or {}
        channel = raw.get("salesChannel") or {}
        buyer = raw.get("buyer") or {}
        ship_window = fulfillment.get("shipByWindow") or {}
        delivery_window = fulfillment.get("deliverByWindow") or {}
        return AmazonOrder(
            amazon_order_id=raw["orderId"],
            seller_id=seller_id,
            marketplace_id=channel["marketplaceId"],
            order_status=STATUS_FROM_2026[fulfillment["fulfillmentStatus"]],
            fulfillment_channel="AFN" if fulfillment.get("fulfilledBy") == "AMAZON" else "MFN",
            purchase_date=parse_time(raw["createdTime"]),
            last_update_date=parse_time(raw["lastUpdatedTime"]),
            order_total=_money_2026((raw.get("proceeds") or {}).get("grandTotal")),
            ship_service_level=fulfillment.get("fulfillmentServiceLevel"),
            shipment_service_level_category=fulfillment.get("fulfillmentServiceLevel"),
            is_prime="PRIME" in (raw.get("programs") or []),
            is_business_order="AMAZON_BUSINESS" in (raw.get("programs") or []),
            buyer_email=buyer.get("buyerEmail"),
            buyer_name=buyer.get("buyerName"),
            shipping_address=_address_2026((raw.get("recipient") or {}).get("deliveryAddress")),
            earliest_ship_date=parse_time(ship_window["earliestDateTime"])
            if ship_window.get("earliestDateTime")
            else None,
            latest_ship_date=parse_time(ship_window["latestDateTime"])
            if ship_window.get("latestDateTime")
            else None,
            earliest_delivery_date=parse_time(delivery_window["earliestDateTime"])
            if delivery_window.get("earliestDateTime")
            else None,
            latest_delivery_date=parse_time(delivery_window["latestDateTime"])
            if delivery_window.get("latestDateTime")
            else None,
            items=tuple(item_from_2026(item) for item in raw.get("orderItems") or []),
            api_version="2026-01-01",
            programs=tuple(raw.get("programs") or ()),
            associated_orders=_associated_2026(raw),
        )
    except (KeyError, ValueError) as exc:
        raise AmazonRejected(
            "searchOrders", 200, "UnexpectedResponse", f"order not understood: {exc}"
        ) from exc
