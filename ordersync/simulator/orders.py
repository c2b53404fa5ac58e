"""The simulated order book: orders, their timelines of versions, and the indexes queries scan.

Every change of an order (creation, payment authorised, shipment confirmed, shipped by Amazon,
canceled) appends a :class:`Version` stamped with the simulated second it happened and the moment
it becomes visible to getOrders/searchOrders (stamp + visibility lag). Scheduled changes sit in a
heap and are applied in time order when the clock passes them, so each seller's version index is
append-only and already sorted by (LastUpdateDate, sequence): a query bisects to its window and
walks it once, never rescanning the book.

The by-id operations (getOrder, getOrderItems, confirmShipment) read the latest version: Amazon's
order store is read-your-writes; only its search index lags.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from ordersync.simulator.scenario import UNMAPPED_SKU_PREFIX, Marketplace

SimStatus = Literal[
    "PendingAvailability",
    "Pending",
    "Unshipped",
    "PartiallyShipped",
    "Shipped",
    "InvoiceUnconfirmed",
    "Canceled",
]
FulfillmentChannel = Literal["MFN", "AFN"]
EventKind = Literal["create", "authorise", "cancel", "afn_ship", "release", "confirm_invoice"]
#: Statuses in which nothing is paid or shipped yet, so the buyer (or seller) may still cancel.
OPEN_STATUSES = frozenset({"PendingAvailability", "Pending", "Unshipped"})

#: Amazon's names of the programmes that change how a seller-fulfilled order ships.
SHIP_PLUS = "FBM_SHIP_PLUS"
EASY_SHIP = "AMAZON_EASY_SHIP"
#: Days from purchase to the latest ship date when the scenario says nothing else.
DEFAULT_HANDLING_S = 2 * 86400
#: Why a buyer canceled, as Amazon's BuyerCancelReason shows it.
BUYER_CANCEL_REASON = "Ordered by mistake"


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    state_or_region: str
    postal_code: str
    country_code: str
    phone: str
    line2: str | None = None
    address_type: Literal["Residential", "Commercial"] = "Residential"


@dataclass(frozen=True)
class Item:
    order_item_id: str
    sku: str
    asin: str
    title: str
    quantity: int
    unit_price: Decimal

    @property
    def unmapped(self) -> bool:
        return self.sku.startswith(UNMAPPED_SKU_PREFIX)


@dataclass(frozen=True)
class Package:
    """One confirmShipment package."""

    package_reference_id: str
    carrier_code: str
    carrier_name: str | None
    shipping_method: str | None
    tracking_number: str
    ship_date: float
    items: tuple[tuple[str, int], ...]
    confirmed_at: int
    #: Who told Amazon: the seller (confirmShipment, a feed), a label bought through Amazon (Buy
    #: Shipping, Ship+), or Amazon's own carrier (Easy Ship).
    by: Literal["seller", "label", "easy-ship"] = "seller"


@dataclass(frozen=True)
class Snapshot:
    """An order's mutable part at one version."""

    status: SimStatus
    #: Units shipped, aligned with :attr:`Order.items`.
    shipped: tuple[int, ...]
    packages: tuple[Package, ...] = ()
    cancel_reason: str | None = None
    cancel_requester: Literal["BUYER", "SELLER"] = "BUYER"


@dataclass(frozen=True)
class Version:
    seq: int
    at: int
    visible_at: float
    snapshot: Snapshot
    change: str


@dataclass
class Order:
    order_id: str
    seller_id: str
    marketplace: Marketplace
    channel: FulfillmentChannel
    created: int
    items: tuple[Item, ...]
    address: Address | None
    buyer_name: str
    buyer_email: str
    ship_service_level: str
    ship_category: Literal["Standard", "Expedited"]
    preorder: bool = False
    #: Programmes that change how the seller ships (FBM_SHIP_PLUS, AMAZON_EASY_SHIP); Prime follows AFN.
    programs: tuple[str, ...] = ()
    versions: list[Version] = field(default_factory=list)
    #: The seller's own order number, from an order acknowledgement (StatusCode Success) that gave a
    #: MerchantOrderID: v0's SellerOrderId, 2026-01-01's SELLER_ORDER_ID alias. Not an order change.
    merchant_order_id: str | None = None
    #: Amazon's LatestShipDate (epoch seconds): a seller's confirmation after it is a late shipment.
    #: None: two days after the purchase, Amazon's usual handling time.
    latest_ship_at: int | None = None
    #: v0's EasyShipShipmentStatus once the order was scheduled through the Easy Ship API
    #: (PendingPickUp, PickedUp, Delivered, LabelCanceled); None: not scheduled that way.
    easy_ship_status: str | None = None

    @property
    def latest_ship(self) -> int:
        return self.latest_ship_at if self.latest_ship_at is not None else self.created + DEFAULT_HANDLING_S

    @property
    def earliest_ship(self) -> int:
        return min(self.created + 86400, self.latest_ship)

    @property
    def current(self) -> Snapshot:
        return self.versions[-1].snapshot

    @property
    def last_update(self) -> int:
        return self.versions[-1].at

    @property
    def has_unmapped_sku(self) -> bool:
        return any(item.unmapped for item in self.items)

    def visible_version(self, as_of: float) -> Version | None:
        """The newest version the search index shows at ``as_of`` (None: not yet listed)."""
        for version in reversed(self.versions):
            if version.visible_at <= as_of:
                return version
        return None

    def item(self, order_item_id: str) -> tuple[int, Item] | None:
        for index, item in enumerate(self.items):
            if item.order_item_id == order_item_id:
                return index, item
        return None


@dataclass(order=True, frozen=True)
class ScheduledEvent:
    at: int
    seq: int
    order_id: str = field(compare=False)
    kind: EventKind = field(compare=False)
    lag: float = field(compare=False, default=0.0)


#: An entry of a seller index: (stamp, version sequence, order id). Sorted by construction.
IndexEntry = tuple[int, int, str]


class TransitionError(ValueError):
    """A status change the order's current state does not allow."""


class OrderBook:
    """All orders of all sellers, the schedule of their future changes, and per-seller indexes."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self._unborn: dict[str, tuple[Order, Snapshot, float]] = {}
        self._schedule: list[ScheduledEvent] = []
        self._event_seq = itertools.count()
        self._version_seq = itertools.count(1)
        self._by_update: dict[str, list[IndexEntry]] = {}
        self._by_created: dict[str, list[IndexEntry]] = {}
        self._applied_until = float("-inf")
        #: Told of every version as it is recorded (creation and every change, in time order per
        #: order): how the simulator's ORDER_CHANGE notifications see each change once.
        self.on_version: Callable[[Order, Version], None] | None = None

    # --- building ---------------------------------------------------------------------------------

    def schedule_creation(self, order: Order, initial: Snapshot, lag: float) -> None:
        """An order that appears at ``order.created``."""
        self._unborn[order.order_id] = (order, initial, lag)
        self._push(order.created, order.order_id, "create", lag)

    def schedule(self, at: int, order_id: str, kind: EventKind, lag: float = 0.0) -> None:
        self._push(at, order_id, kind, lag)

    def _push(self, at: int, order_id: str, kind: EventKind, lag: float) -> None:
        if at <= self._applied_until:
            raise ValueError("cannot schedule a change in the simulated past")
        heapq.heappush(self._schedule, ScheduledEvent(at, next(self._event_seq), order_id, kind, lag))

    def known(self, order_id: str) -> bool:
        return order_id in self.orders or order_id in self._unborn

    @property
    def upcoming(self) -> int:
        """Orders scheduled to be placed later."""
        return len(self._unborn)

    # --- time -------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Apply every scheduled change due at or before ``now``, in time order."""
        while self._schedule and self._schedule[0].at <= now:
            event = heapq.heappop(self._schedule)
            self._apply(event)
        self._applied_until = max(self._applied_until, now)

    def _apply(self, event: ScheduledEvent) -> None:
        if event.kind == "create":
            order, initial, lag = self._unborn.pop(event.order_id)
            self.orders[order.order_id] = order
            version = self._record(order, initial, event.at, lag, "created")
            self._by_created.setdefault(order.seller_id, []).append(
                (order.created, version.seq, order.order_id)
            )
            return
        order = self.orders[event.order_id]
        snap = order.current
        if event.kind == "release" and snap.status == "PendingAvailability":
            self._record(order, replace(snap, status="Pending"), event.at, event.lag, "pre-order released")
        elif event.kind == "authorise" and snap.status == "Pending":
            self._record(order, replace(snap, status="Unshipped"), event.at, event.lag, "payment authorised")
        elif event.kind == "confirm_invoice" and snap.status == "InvoiceUnconfirmed":
            self._record(order, replace(snap, status="Shipped"), event.at, event.lag, "invoice confirmed")
        elif event.kind == "cancel" and snap.status in OPEN_STATUSES and not any(snap.shipped):
            canceled = replace(snap, status="Canceled", cancel_reason=BUYER_CANCEL_REASON)
            self._record(order, canceled, event.at, event.lag, "canceled by the buyer")
        elif event.kind == "afn_ship" and order.channel == "AFN" and snap.status == "Unshipped":
            shipped = replace(snap, status="Shipped", shipped=tuple(i.quantity for i in order.items))
            self._record(order, shipped, event.at, event.lag, "shipped by Amazon")
        # Otherwise the change no longer applies (e.g. the buyer cannot cancel a shipped order).

    def _record(self, order: Order, snapshot: Snapshot, at: int, lag: float, change: str) -> Version:
        version = Version(next(self._version_seq), at, at + lag, snapshot, change)
        order.versions.append(version)
        self._by_update.setdefault(order.seller_id, []).append((at, version.seq, order.order_id))
        if self.on_version is not None:
            self.on_version(order, version)
        return version

    # --- changes made now (seller's confirmShipment, control API) ---------------------------------

    def change(self, order: Order, snapshot: Snapshot, now: float, lag: float, change: str) -> Version:
        """Record a change happening at simulated ``now`` (after :meth:`advance` to ``now``)."""
        at = max(int(now), order.last_update)
        return self._record(order, snapshot, at, lag, change)

    def add_order(self, order: Order, initial: Snapshot, lag: float) -> Version:
        """Place an order now (``order.created`` must be the current simulated second)."""
        if self.known(order.order_id):
            raise ValueError(f"order {order.order_id} exists")
        self.orders[order.order_id] = order
        version = self._record(order, initial, order.created, lag, "created")
        self._by_created.setdefault(order.seller_id, []).append((order.created, version.seq, order.order_id))
        return version

    def set_status(self, order: Order, status: SimStatus, now: float, lag: float) -> Version:
        """The control API's status change, under the same rules Amazon's own changes follow."""
        snap = order.current
        if status == "Canceled":
            if snap.status not in OPEN_STATUSES or any(snap.shipped):
                raise TransitionError(f"a {snap.status} order cannot be canceled")
            return self.change(
                order,
                replace(snap, status="Canceled", cancel_reason=BUYER_CANCEL_REASON),
                now,
                lag,
                "canceled",
            )
        if status == "Pending":
            if snap.status != "PendingAvailability":
                raise TransitionError(
                    f"only a PendingAvailability order becomes Pending, not a {snap.status} one"
                )
            return self.change(order, replace(snap, status="Pending"), now, lag, "pre-order released")
        if status == "InvoiceUnconfirmed":
            if snap.status not in ("Unshipped", "PartiallyShipped"):
                raise TransitionError(f"a {snap.status} order cannot be shipped")
            full = tuple(i.quantity for i in order.items)
            return self.change(
                order,
                replace(snap, status="InvoiceUnconfirmed", shipped=full),
                now,
                lag,
                "shipped, invoice unconfirmed",
            )
        if status == "Unshipped":
            if snap.status != "Pending":
                raise TransitionError(f"only a Pending order becomes Unshipped, not a {snap.status} one")
            return self.change(order, replace(snap, status="Unshipped"), now, lag, "payment authorised")
        if status == "Shipped":
            if snap.status == "InvoiceUnconfirmed":
                return self.change(order, replace(snap, status="Shipped"), now, lag, "invoice confirmed")
            if snap.status not in ("Unshipped", "PartiallyShipped"):
                raise TransitionError(f"a {snap.status} order cannot be shipped")
            full = tuple(i.quantity for i in order.items)
            return self.change(order, replace(snap, status="Shipped", shipped=full), now, lag, "shipped")
        raise TransitionError(f"the control API cannot set status {status}")

    # --- queries ----------------------------------------------------------------------------------

    def scan(
        self,
        seller_id: str,
        *,
        by: Literal["updated", "created"],
        after: float,
        before: float,
        as_of: float,
        resume_after: IndexEntry | None,
        accept: Callable[[Order, Version], bool],
        limit: int,
    ) -> tuple[list[tuple[Order, Version]], IndexEntry | None]:
        """One page of a seller's orders in the window [after, before], oldest first.

        ``by="updated"`` walks versions by LastUpdateDate and keeps an order where the version is
        the one the index shows at ``as_of``; ``by="created"`` walks orders by PurchaseDate and
        shows each one's visible version. Returns the page and, when more remain, the entry to
        resume after.
        """
        entries = (self._by_update if by == "updated" else self._by_created).get(seller_id, [])
        if resume_after is not None:
            start = bisect_right(entries, resume_after)
        else:
            start = bisect_left(entries, (int(-(-after // 1)),))  # first stamp >= after
        page: list[tuple[Order, Version]] = []
        for entry in self._walk(entries, start, before):
            order = self.orders[entry[2]]
            version = order.visible_version(as_of)
            if version is None or (by == "updated" and version.seq != entry[1]):
                continue
            if not accept(order, version):
                continue
            if len(page) == limit:
                return page, _entry_of(page[-1], by)
            page.append((order, version))
        return page, None

    @staticmethod
    def _walk(entries: list[IndexEntry], start: int, before: float) -> Iterator[IndexEntry]:
        for index in range(start, len(entries)):
            entry = entries[index]
            if entry[0] > before:
                return
            yield entry

    def seller_orders(self, seller_id: str | None = None) -> Iterator[Order]:
        for order in self.orders.values():
            if seller_id is None or order.seller_id == seller_id:
                yield order


def _entry_of(found: tuple[Order, Version], by: Literal["updated", "created"]) -> IndexEntry:
    order, version = found
    if by == "updated":
        return (version.at, version.seq, order.order_id)
    return (order.created, order.versions[0].seq, order.order_id)
