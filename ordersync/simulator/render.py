"""JSON of simulated orders in Amazon's shapes (Orders v0 and 2026-01-01) and in the truth API's.

What Amazon withholds is withheld here too: a Pending order has no OrderTotal, no item prices and
no ShippingAddress; a Canceled order has no OrderTotal or address. Personal data (:class:`Pii`)
comes only where the request may see it: Orders v0 through a Restricted Data Token (when the
scenario enforces it), without which the address carries only city, region, postal code and country
and there is no buyer information; Orders 2026-01-01 with the application's restricted roles
(docs "Access Orders PII"), without which the delivery address carries only city, region and country
(2026-01-01 counts the postal code as personal data) and the buyer's name and email are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ordersync.simulator.clock import epoch_to_iso, epoch_to_iso_ms
from ordersync.simulator.orders import EASY_SHIP, SHIP_PLUS, Address, Item, Order, Package, Snapshot, Version

#: v0 OrderStatus -> 2026-01-01 FulfillmentStatus.
STATUS_2026: dict[str, str] = {
    "PendingAvailability": "PENDING_AVAILABILITY",
    "Pending": "PENDING",
    "Unshipped": "UNSHIPPED",
    "PartiallyShipped": "PARTIALLY_SHIPPED",
    "Shipped": "SHIPPED",
    "Canceled": "CANCELLED",
    "Unfulfillable": "UNFULFILLABLE",
}
FULFILLED_BY_2026 = {"MFN": "MERCHANT", "AFN": "AMAZON"}
#: InvoiceUnconfirmed is shipped but not invoiced: 2026-01-01 has no such status and says SHIPPED.
STATUS_2026_EXTRA = {"InvoiceUnconfirmed": "SHIPPED"}
#: Statuses whose orders show a ShippingAddress (ordersV0.json OrderAddress).
ADDRESS_STATUSES = frozenset({"Unshipped", "PartiallyShipped", "Shipped", "InvoiceUnconfirmed"})


@dataclass(frozen=True)
class Pii:
    """Which personal data a request may see: v0, the Restricted Data Token's data elements the
    application holds the roles for; 2026-01-01, the application's roles."""

    #: Name, street lines, phone (and, in 2026-01-01, the postal code) of the shipping address.
    shipping_address: bool = False
    buyer_name: bool = False
    buyer_email: bool = False

    @property
    def buyer_info(self) -> bool:
        return self.buyer_name or self.buyer_email


ALL_PII = Pii(shipping_address=True, buyer_name=True, buyer_email=True)
#: Statuses in which 2026-01-01 shows a seller-fulfilled order's buyer email ("Access Orders PII":
#: UNSHIPPED, PARTIALLY_SHIPPED or SHIPPED; InvoiceUnconfirmed is SHIPPED there).
#: The delivery promise after the order is placed (seconds): both APIs' delivery window.
DELIVERY_AFTER_S = (3 * 86400, 5 * 86400)
BUYER_EMAIL_STATUSES = frozenset({"Unshipped", "PartiallyShipped", "Shipped", "InvoiceUnconfirmed"})


def money_amount(amount: Decimal, decimals: int) -> str:
    return f"{amount:.{decimals}f}"


def _priced(snapshot: Snapshot) -> bool:
    return snapshot.status not in ("Pending", "PendingAvailability")


def _has_address(order: Order, snapshot: Snapshot) -> bool:
    return order.address is not None and snapshot.status in ADDRESS_STATUSES


def _order_total(order: Order) -> Decimal:
    return sum((item.unit_price * item.quantity for item in order.items), Decimal(0))


# --- Orders v0 ---------------------------------------------------------------------------------------


def _money_v0(order: Order, amount: Decimal) -> dict[str, str]:
    market = order.marketplace
    return {"CurrencyCode": market.currency, "Amount": money_amount(amount, market.decimals)}


def address_v0(address: Address, pii: Pii) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "City": address.city,
        "StateOrRegion": address.state_or_region,
        "PostalCode": address.postal_code,
        "CountryCode": address.country_code,
    }
    if pii.shipping_address:
        shown = {"Name": address.name, "AddressLine1": address.line1, **shown, "Phone": address.phone}
        if address.line2:
            shown["AddressLine2"] = address.line2
        shown["AddressType"] = address.address_type
    return shown


def order_v0(order: Order, version: Version, pii: Pii) -> dict[str, Any]:
    snap = version.snapshot
    shipped = sum(snap.shipped)
    ordered = sum(item.quantity for item in order.items)
    body: dict[str, Any] = {"AmazonOrderId": order.order_id}
    if order.merchant_order_id:
        body["SellerOrderId"] = order.merchant_order_id
    body.update(
        {
            "PurchaseDate": epoch_to_iso(order.created),
            "LastUpdateDate": epoch_to_iso(version.at),
            "OrderStatus": snap.status,
            "FulfillmentChannel": order.channel,
            "SalesChannel": order.marketplace.sales_channel,
            "ShipServiceLevel": order.ship_service_level,
        }
    )
    if _priced(snap) and snap.status != "Canceled":
        body["OrderTotal"] = _money_v0(order, _order_total(order))
    body.update(
        {
            "NumberOfItemsShipped": shipped,
            "NumberOfItemsUnshipped": 0 if snap.status == "Canceled" else ordered - shipped,
            "PaymentMethod": "Other",
            "PaymentMethodDetails": ["Standard"],
            "MarketplaceId": order.marketplace.marketplace_id,
            "ShipmentServiceLevelCategory": order.ship_category,
            "OrderType": "Preorder" if order.preorder else "StandardOrder",
            "EarliestShipDate": epoch_to_iso(order.earliest_ship),
            "LatestShipDate": epoch_to_iso(order.latest_ship),
            "EarliestDeliveryDate": epoch_to_iso(order.created + DELIVERY_AFTER_S[0]),
            "LatestDeliveryDate": epoch_to_iso(order.created + DELIVERY_AFTER_S[1]),
            "IsBusinessOrder": False,
            "IsPrime": order.channel == "AFN",
            "IsPremiumOrder": False,
            "IsGlobalExpressEnabled": False,
            "IsReplacementOrder": False,
            "IsSoldByAB": False,
            "IsISPU": False,
            "IsAccessPointOrder": False,
        }
    )
    if EASY_SHIP in order.programs:
        body["EasyShipShipmentStatus"] = order.easy_ship_status or (
            "PickedUp" if any(p.by == "easy-ship" for p in snap.packages) else "PendingPickUp"
        )
    if order.address is not None and _has_address(order, snap):
        body["ShippingAddress"] = address_v0(order.address, pii)
    if pii.buyer_info:
        buyer: dict[str, Any] = {}
        if pii.buyer_email:
            buyer["BuyerEmail"] = order.buyer_email
        if pii.buyer_name:
            buyer["BuyerName"] = order.buyer_name
        body["BuyerInfo"] = buyer
    return body


def order_item_v0(order: Order, index: int, snapshot: Snapshot) -> dict[str, Any]:
    item = order.items[index]
    body: dict[str, Any] = {
        "ASIN": item.asin,
        "SellerSKU": item.sku,
        "OrderItemId": item.order_item_id,
        "Title": item.title,
        "QuantityOrdered": item.quantity,
        "QuantityShipped": snapshot.shipped[index],
        "ProductInfo": {"NumberOfItems": "1"},
    }
    if SHIP_PLUS in order.programs:  # v0 names Ship+ on the items (AmazonPrograms)
        body["AmazonPrograms"] = {"Programs": [SHIP_PLUS]}
    if _priced(snapshot):
        zero = _money_v0(order, Decimal(0))
        body.update(
            {
                "ItemPrice": _money_v0(order, item.unit_price * item.quantity),
                "ItemTax": zero,
                "ShippingPrice": zero,
                "ShippingTax": zero,
                "ShippingDiscount": zero,
                "ShippingDiscountTax": zero,
                "PromotionDiscount": zero,
                "PromotionDiscountTax": zero,
                "PromotionIds": [],
                "IsGift": "false",
            }
        )
        if order.marketplace.country_code == "US":
            body["TaxCollection"] = {
                "Model": "MarketplaceFacilitator",
                "ResponsibleParty": "Amazon Services, Inc.",
            }
    body.update(
        {
            "ConditionId": "New",
            "ConditionSubtypeId": "New",
            "IsTransparency": False,
            "SerialNumberRequired": False,
        }
    )
    canceled = snapshot.status == "Canceled" and snapshot.cancel_requester == "BUYER"
    body["BuyerRequestedCancel"] = {"IsBuyerRequestedCancel": "true" if canceled else "false"}
    if canceled and snapshot.cancel_reason:
        body["BuyerRequestedCancel"]["BuyerCancelReason"] = snapshot.cancel_reason
    return body


# --- Orders 2026-01-01 ---------------------------------------------------------------------------------


def _money_2026(order: Order, amount: Decimal) -> dict[str, str]:
    market = order.marketplace
    return {"amount": money_amount(amount, market.decimals), "currencyCode": market.currency}


def _address_2026(address: Address, pii: Pii) -> dict[str, Any]:
    shown: dict[str, Any] = {"city": address.city, "stateOrRegion": address.state_or_region}
    if pii.shipping_address:
        # name, address lines, postal code and phone are personal data ("Access Orders PII").
        shown = {"name": address.name, "addressLine1": address.line1, **shown}
        if address.line2:
            shown["addressLine2"] = address.line2
        shown["postalCode"] = address.postal_code
    shown["countryCode"] = address.country_code
    if pii.shipping_address:
        shown["phone"] = address.phone
        shown["addressType"] = address.address_type.upper()
    return shown


def _buyer_2026(order: Order, snap: Snapshot, pii: Pii) -> dict[str, Any]:
    buyer: dict[str, Any] = {}
    if pii.buyer_name:
        buyer["buyerName"] = order.buyer_name
    # "Only available for merchant-fulfilled (FBM) orders" (Buyer.buyerEmail), once paid.
    if pii.buyer_email and order.channel == "MFN" and snap.status in BUYER_EMAIL_STATUSES:
        buyer["buyerEmail"] = order.buyer_email
    return buyer


def _item_2026(order: Order, index: int, snap: Snapshot, included: frozenset[str]) -> dict[str, Any]:
    item: Item = order.items[index]
    product: dict[str, Any] = {
        "asin": item.asin,
        "title": item.title,
        "sellerSku": item.sku,
        "condition": {"conditionType": "NEW", "conditionSubtype": "NEW"},
    }
    if _priced(snap):
        product["price"] = {"unitPrice": _money_2026(order, item.unit_price)}
    body: dict[str, Any] = {
        "orderItemId": item.order_item_id,
        "quantityOrdered": item.quantity,
        "product": product,
    }
    if "PROCEEDS" in included and _priced(snap):
        subtotal = _money_2026(order, item.unit_price * item.quantity)
        zero = _money_2026(order, Decimal(0))
        body["proceeds"] = {
            "proceedsTotal": subtotal,
            "breakdowns": [
                {"type": "ITEM", "subtotal": subtotal},
                {"type": "SHIPPING", "subtotal": zero},
                {"type": "TAX", "subtotal": zero},
            ],
        }
    if "TAX" in included and _priced(snap) and order.marketplace.country_code == "US":
        collection = {"model": "MARKETPLACE_FACILITATOR", "responsibleParty": "AMAZON_SERVICES"}
        body["tax"] = {"taxCollections": [collection]}
    if "CANCELLATION" in included and snap.status == "Canceled" and snap.cancel_requester == "BUYER":
        body["cancellation"] = {
            "cancellationRequest": {"requester": "BUYER", "cancelReason": snap.cancel_reason or ""},
        }
    if "FULFILLMENT" in included:
        shipped = snap.shipped[index]
        unfulfilled = 0 if snap.status == "Canceled" else item.quantity - shipped
        body["fulfillment"] = {"quantityFulfilled": shipped, "quantityUnfulfilled": unfulfilled}
    return body


def _package_2026(package: Package) -> dict[str, Any]:
    body: dict[str, Any] = {
        "packageReferenceId": package.package_reference_id,
        "createdTime": epoch_to_iso(package.confirmed_at),
        "packageStatus": {"status": "SHIPPED"},
        "carrier": package.carrier_name or package.carrier_code,
        "shipTime": epoch_to_iso(package.ship_date),
        "trackingNumber": package.tracking_number,
        "packageItems": [{"orderItemId": item_id, "quantity": qty} for item_id, qty in package.items],
    }
    if package.shipping_method:
        body["shippingService"] = package.shipping_method
    return body


def order_2026(order: Order, version: Version, included: frozenset[str], pii: Pii) -> dict[str, Any]:
    snap = version.snapshot
    market = order.marketplace
    body: dict[str, Any] = {"orderId": order.order_id}
    if order.merchant_order_id:
        body["orderAliases"] = [{"aliasId": order.merchant_order_id, "aliasType": "SELLER_ORDER_ID"}]
    body |= {
        "createdTime": epoch_to_iso(order.created),
        "lastUpdatedTime": epoch_to_iso(version.at),
        "programs": (["PRIME"] if order.channel == "AFN" else []) + list(order.programs),
        "salesChannel": {
            "channelName": "AMAZON",
            "marketplaceId": market.marketplace_id,
            "marketplaceName": market.sales_channel,
        },
    }
    buyer = _buyer_2026(order, snap, pii) if "BUYER" in included else {}
    if buyer:
        body["buyer"] = buyer
    if "RECIPIENT" in included and order.address is not None and _has_address(order, snap):
        body["recipient"] = {"deliveryAddress": _address_2026(order.address, pii)}
    if "PROCEEDS" in included and _priced(snap) and snap.status != "Canceled":
        body["proceeds"] = {"grandTotal": _money_2026(order, _order_total(order))}
    if "FULFILLMENT" in included:
        body["fulfillment"] = {
            "fulfillmentStatus": STATUS_2026.get(snap.status) or STATUS_2026_EXTRA[snap.status],
            "fulfilledBy": FULFILLED_BY_2026[order.channel],
            "fulfillmentServiceLevel": order.ship_category.upper(),
            "shipByWindow": {
                "earliestDateTime": epoch_to_iso(order.earliest_ship),
                "latestDateTime": epoch_to_iso(order.latest_ship),
            },
            "deliverByWindow": {
                "earliestDateTime": epoch_to_iso(order.created + DELIVERY_AFTER_S[0]),
                "latestDateTime": epoch_to_iso(order.created + DELIVERY_AFTER_S[1]),
            },
        }
    body["orderItems"] = [_item_2026(order, i, snap, included) for i in range(len(order.items))]
    if "PACKAGES" in included and order.channel == "MFN" and snap.packages:
        body["packages"] = [_package_2026(p) for p in snap.packages]
    return body


# --- ORDER_CHANGE notifications ------------------------------------------------------------------------


def order_change(order: Order, version: Version) -> dict[str, Any]:
    """``Payload.OrderChangeNotification`` of the ORDER_CHANGE notification (payload version 1.0) of
    one version of an order: order level (every item), the order as that version left it.

    Every version the simulator records is an OrderStatusChange: it has no buyer cancellation
    *request* (a buyer's cancellation cancels at once), so it never sends BuyerRequestedChange. Amazon
    does not document ChangeReason's values: the simulator gives its own words for the change.
    """
    snap = version.snapshot
    shipped = sum(snap.shipped)
    ordered = sum(item.quantity for item in order.items)
    buyer_canceled = snap.status == "Canceled" and snap.cancel_requester == "BUYER"
    item_statuses = [
        "Shipped" if snap.shipped[i] >= item.quantity else "Unshipped" for i, item in enumerate(order.items)
    ]
    items: list[dict[str, Any]] = []
    for index, item in enumerate(order.items):
        body: dict[str, Any] = {
            "OrderItemId": item.order_item_id,
            "SellerSKU": item.sku,
            "SupplySourceId": None,
            "Quantity": item.quantity,
            "QuantityShipped": snap.shipped[index],
            "IsBuyerRequestedCancel": buyer_canceled,
        }
        # "Will display it when items' status are different" (OrderChangeNotification.json).
        if len(set(item_statuses)) > 1:
            body["OrderItemStatus"] = item_statuses[index]
        items.append(body)
    summary: dict[str, Any] = {
        "MarketplaceId": order.marketplace.marketplace_id,
        "OrderStatus": snap.status,
        "PurchaseDate": epoch_to_iso_ms(order.created),
        "DestinationPostalCode": (
            order.address.postal_code if order.address is not None and _has_address(order, snap) else None
        ),
        "FulfillmentType": order.channel,
        "OrderType": "Preorder" if order.preorder else "StandardOrder",
        "NumberOfItemsShipped": shipped,
        "NumberOfItemsUnshipped": 0 if snap.status == "Canceled" else ordered - shipped,
        "EarliestShipDate": epoch_to_iso_ms(order.earliest_ship),
        "LatestShipDate": epoch_to_iso_ms(order.latest_ship),
    }
    if order.channel == "AFN":
        summary["OrderPrograms"] = ["Prime"]  # as v0's IsPrime says of the simulator's AFN orders
    summary["OrderItems"] = items
    return {
        "NotificationLevel": "OrderLevel",
        "SellerId": order.seller_id,
        "AmazonOrderId": order.order_id,
        "OrderChangeType": "OrderStatusChange",
        "OrderChangeTrigger": {
            "TimeOfOrderChange": epoch_to_iso_ms(version.at),
            "ChangeReason": version.change,
        },
        "Summary": summary,
    }


# --- truth API -----------------------------------------------------------------------------------------


def order_truth(order: Order) -> dict[str, Any]:
    """Everything the simulator knows about an order, for tests and the demo (no Amazon shape)."""
    snap = order.current
    latest = order.versions[-1]
    market = order.marketplace
    return {
        "amazon_order_id": order.order_id,
        "seller_id": order.seller_id,
        "marketplace_id": market.marketplace_id,
        "status": snap.status,
        "fulfillment_channel": order.channel,
        "created": epoch_to_iso(order.created),
        "last_updated": epoch_to_iso(latest.at),
        "visible_at": epoch_to_iso(latest.visible_at),
        "has_unmapped_sku": order.has_unmapped_sku,
        "has_address": order.address is not None,
        "confirmed_by_seller": any(p.by == "seller" for p in snap.packages),
        "merchant_order_id": order.merchant_order_id,
        "programs": list(order.programs),
        "latest_ship_date": epoch_to_iso(order.latest_ship),
        "currency": market.currency,
        "items": [
            {
                "order_item_id": item.order_item_id,
                "sku": item.sku,
                "asin": item.asin,
                "unmapped": item.unmapped,
                "quantity_ordered": item.quantity,
                "quantity_shipped": snap.shipped[i],
                "unit_price": money_amount(item.unit_price, market.decimals),
            }
            for i, item in enumerate(order.items)
        ],
        "shipments": [
            {
                "package_reference_id": p.package_reference_id,
                "carrier_code": p.carrier_code,
                "carrier_name": p.carrier_name,
                "shipping_method": p.shipping_method,
                "tracking_number": p.tracking_number,
                "ship_date": epoch_to_iso(p.ship_date),
                "confirmed_at": epoch_to_iso(p.confirmed_at),
                "by": p.by,
                # Amazon's late shipment: the seller's confirmation came after the latest ship date.
                "late": p.by == "seller" and p.confirmed_at > order.latest_ship,
                "items": [{"order_item_id": item_id, "quantity": qty} for item_id, qty in p.items],
            }
            for p in snap.packages
        ],
        "history": [
            {
                "at": epoch_to_iso(v.at),
                "visible_at": epoch_to_iso(v.visible_at),
                "status": v.snapshot.status,
                "change": v.change,
            }
            for v in order.versions
        ],
    }
