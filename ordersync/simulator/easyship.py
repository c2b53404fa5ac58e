"""Amazon's Easy Ship API 2022-03-23 in the simulator (easyShip_2022-03-23.json): handover slots,
scheduled packages and their life on the simulated clock.

Only seller-fulfilled (MFN) Unshipped orders of the Easy Ship programme (AMAZON_EASY_SHIP) of the
calling seller, in a marketplace where the scenario runs Easy Ship, can be scheduled. A scheduled
package is ReadyForPickup; it is PickedUp (and the order Shipped, by Amazon's carrier) a while after
its slot starts and Delivered later (scenario ``easy_ship``). Errors use the model's codes
(``Code``): a slot that is full or was taken since it was listed answers 400
RetryableAfterGettingNewSlots ("request a new time slot and try to schedule again"), a slot that
started (or is within the cut-off) 400 ScheduleWindowExpired, an unknown slot 400 InvalidTimeSlotId.

The model's error table gives OrderNotEligibleForRescheduling as HTTP 405, but updateScheduledPackages
documents no 405 response: the simulator answers it with 400.
"""

from __future__ import annotations

import heapq
import itertools
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ordersync.simulator.clock import epoch_to_iso
from ordersync.simulator.orders import EASY_SHIP, Order, OrderBook
from ordersync.simulator.scenario import EasyShipProfile
from ordersync.simulator.validation import SpApiError, invalid_input

#: The model's minimums (Dimension, WeightValue) and units (UnitOfLength, UnitOfWeight).
MIN_DIMENSION_CM = 0.01
MIN_WEIGHT_G = 11.0
LENGTH_UNITS = ("cm",)
WEIGHT_UNITS = ("grams", "g")
LABEL_FORMATS = ("PDF", "ZPL")
#: The model's ``maxItems`` of Packages, UpdatePackageDetailsList, Items; bulk's scheduledPackages.
MAX_PACKAGES = 500
MAX_ITEMS = 500
MAX_BULK_ORDERS = 100
MAX_STRING = 255

_ORDER_ID = re.compile(r"^\d{3}-\d{7}-\d{7}$")
_SLOT_ID = re.compile(r"^ES-([A-Z0-9]{8,20})-(\d{8})-(\d{2})$")

#: Package statuses the simulator's packages go through (PackageStatus).
READY, PICKED_UP, DELIVERED, LABEL_CANCELED = "ReadyForPickup", "PickedUp", "Delivered", "LabelCanceled"
#: v0 EasyShipShipmentStatus for each package status (a DROPOFF slot: PendingDropOff, DroppedOff).
V0_STATUS = {
    READY: "PendingPickUp",
    PICKED_UP: "PickedUp",
    DELIVERED: "Delivered",
    LABEL_CANCELED: "LabelCanceled",
}


@dataclass(frozen=True)
class Slot:
    """One handover time slot of a marketplace."""

    slot_id: str
    marketplace_id: str
    start: int
    end: int
    handover_method: str

    def as_amazon(self) -> dict[str, Any]:
        return {
            "slotId": self.slot_id,
            "startTime": epoch_to_iso(self.start),
            "endTime": epoch_to_iso(self.end),
            "handoverMethod": self.handover_method,
        }


@dataclass(frozen=True)
class PackageSize:
    length: float
    width: float
    height: float
    weight_g: float
    unit_of_weight: str = "g"
    identifier: str | None = None

    def dimensions(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "length": self.length,
            "width": self.width,
            "height": self.height,
            "unit": "cm",
        }
        if self.identifier is not None:
            body["identifier"] = self.identifier
        return body

    def weight(self) -> dict[str, Any]:
        return {"value": self.weight_g, "unit": self.unit_of_weight}


@dataclass
class ScheduledPackage:
    order_id: str
    seller_id: str
    marketplace_id: str
    package_id: str
    slot: Slot
    size: PackageSize
    items: tuple[tuple[str, tuple[str, ...]], ...]
    identifier: str | None
    tracking_id: str
    invoice_number: str
    invoice_date: int
    scheduled_at: int
    status: str = READY
    picked_up_at: int | None = None
    delivered_at: int | None = None
    #: Bumped on each reschedule, so stale clock events are ignored.
    generation: int = 0

    @property
    def has_serial_numbers(self) -> bool:
        return any(serials for _, serials in self.items)

    def as_amazon(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "scheduledPackageId": {"amazonOrderId": self.order_id, "packageId": self.package_id},
            "packageDimensions": self.size.dimensions(),
            "packageWeight": self.size.weight(),
            "packageItems": [
                {"orderItemId": item_id, **({"orderItemSerialNumbers": list(serials)} if serials else {})}
                for item_id, serials in self.items
            ],
            "packageTimeSlot": self.slot.as_amazon(),
            "invoice": {"invoiceNumber": self.invoice_number, "invoiceDate": epoch_to_iso(self.invoice_date)},
            "packageStatus": self.status,
            "trackingDetails": {"trackingId": self.tracking_id},
        }
        if self.identifier is not None:
            body["packageIdentifier"] = self.identifier
        return body

    def truth(self) -> dict[str, Any]:
        return {
            **self.as_amazon(),
            "sellerId": self.seller_id,
            "marketplaceId": self.marketplace_id,
            "scheduledAt": epoch_to_iso(self.scheduled_at),
            "pickedUpAt": None if self.picked_up_at is None else epoch_to_iso(self.picked_up_at),
            "deliveredAt": None if self.delivered_at is None else epoch_to_iso(self.delivered_at),
        }


@dataclass(order=True, frozen=True)
class _Event:
    at: int
    seq: int
    order_id: str = field(compare=False)
    generation: int = field(compare=False)


#: Called when Amazon's carrier picks a package up: (order, package, when) ships the order.
PickUp = Callable[[Order, ScheduledPackage, int], None]


class EasyShipEngine:
    """The Easy Ship API's state: slot usage, the scheduled packages (one per order) and their
    scheduled status changes."""

    def __init__(self, profile: EasyShipProfile, book: OrderBook, pick_up: PickUp) -> None:
        self.profile = profile
        self.book = book
        self._pick_up = pick_up
        self.packages: dict[str, ScheduledPackage] = {}
        #: Packages booked per slot id.
        self.booked: dict[str, int] = {}
        #: The package size each order's last listHandoverSlots gave.
        self.sizes: dict[str, PackageSize] = {}
        self._events: list[_Event] = []
        self._seq = itertools.count()
        self._package_ids = itertools.count(1)

    # --- slots ------------------------------------------------------------------------------------------

    def slots(self, marketplace_id: str, now: float) -> list[Slot]:
        """Every slot of the marketplace still offered at ``now`` (full ones included)."""
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        found: list[Slot] = []
        for day in range(self.profile.slot_days):
            date = today + timedelta(days=day)
            for start_h, end_h in self.profile.slot_windows_h:
                slot = self._slot(marketplace_id, date, start_h, end_h)
                if slot.start - self.profile.slot_cutoff_s > now:
                    found.append(slot)
        return found

    def _slot(self, marketplace_id: str, date: datetime, start_h: int, end_h: int) -> Slot:
        start = int((date + timedelta(hours=start_h)).timestamp())
        end = int((date + timedelta(hours=end_h)).timestamp())
        slot_id = f"ES-{marketplace_id}-{date:%Y%m%d}-{start_h:02d}"
        return Slot(slot_id, marketplace_id, start, end, self.profile.handover_method)

    def free(self, slot: Slot) -> bool:
        return self.booked.get(slot.slot_id, 0) < self.profile.slot_capacity

    def resolve_slot(self, raw: Any, marketplace_id: str, now: float) -> Slot:
        """The slot a request names (TimeSlot), bookable now; else the model's error for it."""
        slot_id = raw.get("slotId") if isinstance(raw, dict) else None
        if not isinstance(slot_id, str) or not slot_id:
            raise invalid_input("packageTimeSlot.slotId is required.")
        match = _SLOT_ID.match(slot_id)
        window = None
        if match is not None and match.group(1) == marketplace_id:
            hour = int(match.group(3))
            window = next((w for w in self.profile.slot_windows_h if w[0] == hour), None)
        if match is None or window is None:
            raise SpApiError(
                400,
                "InvalidTimeSlotId",
                "The specified time slot identifier is not valid.",
                f"slotId {slot_id[:MAX_STRING]} is not a slot of marketplace {marketplace_id}.",
            )
        date = datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC)
        slot = self._slot(marketplace_id, date, *window)
        if slot.start - self.profile.slot_cutoff_s <= now:
            raise SpApiError(
                400,
                "ScheduleWindowExpired",
                "The selected time slot has expired. Call listHandoverSlots again to get a new time slot.",
                f"slotId {slot_id} started at {epoch_to_iso(slot.start)}.",
            )
        if all(offered.slot_id != slot.slot_id for offered in self.slots(marketplace_id, now)):
            raise SpApiError(
                400,
                "InvalidTimeSlotId",
                "The specified time slot identifier is not valid.",
                f"slotId {slot_id} is not offered yet.",
            )
        if not self.free(slot):
            raise SpApiError(
                400,
                "RetryableAfterGettingNewSlots",
                "The selected time slot is no longer available. Request a new time slot and try again.",
                f"slotId {slot_id} is full.",
            )
        return slot

    # --- orders -----------------------------------------------------------------------------------------

    def marketplace(self, body: Mapping[str, Any]) -> str:
        marketplace_id = body.get("marketplaceId")
        if not isinstance(marketplace_id, str) or not 1 <= len(marketplace_id) <= MAX_STRING:
            raise invalid_input("marketplaceId is required (a string of 1 to 255 characters).")
        if marketplace_id not in self.profile.marketplaces:
            raise SpApiError(
                404,
                "RegionNotSupported",
                "Amazon Easy Ship is not supported in the specified marketplace.",
                f"marketplaceId {marketplace_id}",
            )
        return marketplace_id

    def order(
        self, seller_id: str, raw_order_id: Any, marketplace_id: str, *, unshipped: bool = True
    ) -> Order:
        """The seller's Easy Ship order, schedulable (``unshipped``), or the model's error for it."""
        if not isinstance(raw_order_id, str) or not raw_order_id:
            raise invalid_input("amazonOrderId is required.")
        order = self.book.orders.get(raw_order_id)
        if not _ORDER_ID.match(raw_order_id) or order is None or order.seller_id != seller_id:
            raise SpApiError(
                404,
                "ResourceNotFound",
                "The specified resource does not exist.",
                f"No order {raw_order_id[:MAX_STRING]} for this selling partner.",
            )
        if order.marketplace.marketplace_id != marketplace_id:
            raise invalid_input(f"Order {order.order_id} is not an order of marketplace {marketplace_id}.")
        if order.channel != "MFN" or EASY_SHIP not in order.programs:
            raise invalid_input(
                f"Order {order.order_id} is not an Amazon Easy Ship order: only seller-fulfilled orders of "
                "the Easy Ship programme can be scheduled."
            )
        if unshipped and order.current.status != "Unshipped":
            raise SpApiError(
                404,
                "InvalidOrderState",
                "The request cannot be applied to the order in its current state.",
                f"Order {order.order_id} is {order.current.status}; only Unshipped orders can be scheduled.",
            )
        return order

    # --- listHandoverSlots ------------------------------------------------------------------------------

    def list_handover_slots(self, seller_id: str, body: Any, now: float) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_input("The body must be a ListHandoverSlotsRequest JSON object.")
        marketplace_id = self.marketplace(body)
        order = self.order(seller_id, body.get("amazonOrderId"), marketplace_id, unshipped=False)
        size = parse_size(
            body.get("packageDimensions"),
            body.get("packageWeight"),
            units_any_case=self.profile.units_any_case,
        )
        if order.current.status not in ("Unshipped",) and order.order_id not in self.packages:
            raise SpApiError(
                404,
                "InvalidOrderState",
                "The request cannot be applied to the order in its current state.",
                f"Order {order.order_id} is {order.current.status}.",
            )
        too_big = [
            f"{name} {value} cm"
            for name, value in zip(
                ("length", "width", "height"), (size.length, size.width, size.height), strict=True
            )
            if value > self.profile.max_side_cm
        ]
        if size.weight_g > self.profile.max_weight_g:
            too_big.append(f"weight {size.weight_g} g")
        if too_big:
            raise SpApiError(
                404,
                "TimeSlotNotAvailable",
                "No time slot is available for this package.",
                f"Above Easy Ship's limits ({self.profile.max_side_cm} cm a side, "
                f"{self.profile.max_weight_g} g): {', '.join(too_big)}.",
            )
        slots = [s for s in self.slots(marketplace_id, now) if self.free(s)]
        if not slots:
            raise SpApiError(
                404, "TimeSlotNotAvailable", "No time slot is available.", "Every handover slot is full."
            )
        self.sizes[order.order_id] = size
        return {"amazonOrderId": order.order_id, "timeSlots": [s.as_amazon() for s in slots]}

    # --- createScheduledPackage -------------------------------------------------------------------------

    def create_scheduled_package(self, seller_id: str, body: Any, now: float) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_input("The body must be a CreateScheduledPackageRequest JSON object.")
        marketplace_id = self.marketplace(body)
        details = body.get("packageDetails")
        if not isinstance(details, dict):
            raise invalid_input("packageDetails (with packageTimeSlot) is required.")
        order = self.order(seller_id, body.get("amazonOrderId"), marketplace_id)
        return self._schedule(order, details, now, earliest=False).as_amazon()

    def _schedule(
        self, order: Order, details: Mapping[str, Any], now: float, *, earliest: bool
    ) -> ScheduledPackage:
        if order.order_id in self.packages:
            raise SpApiError(
                400,
                "ScheduledPackageAlreadyExists",
                "The order has already been scheduled.",
                f"Order {order.order_id} has package {self.packages[order.order_id].package_id}.",
            )
        items = parse_items(order, details.get("packageItems"))
        identifier = details.get("packageIdentifier")
        if identifier is not None and (not isinstance(identifier, str) or not identifier):
            raise invalid_input("packageIdentifier must be a non-empty string.")
        marketplace_id = order.marketplace.marketplace_id
        raw_slot = details.get("packageTimeSlot")
        if raw_slot is None and earliest:
            slot = next((s for s in self.slots(marketplace_id, now) if self.free(s)), None)
            if slot is None:
                raise SpApiError(
                    404, "TimeSlotNotAvailable", "No time slot is available.", "Every handover slot is full."
                )
        else:
            slot = self.resolve_slot(raw_slot, marketplace_id, now)
        profile = self.profile
        size = self.sizes.get(order.order_id) or PackageSize(
            *profile.default_package_cm, profile.default_package_g
        )
        package = ScheduledPackage(
            order_id=order.order_id,
            seller_id=order.seller_id,
            marketplace_id=marketplace_id,
            package_id=f"ESP{next(self._package_ids):09d}",
            slot=slot,
            size=size,
            items=items,
            identifier=identifier,
            tracking_id=f"AMZNIN{secrets.token_hex(5).upper()}",
            invoice_number=f"IN-{order.order_id[-7:]}-{int(now) % 100000:05d}",
            invoice_date=order.created,
            scheduled_at=int(now),
        )
        self.packages[order.order_id] = package
        self.booked[slot.slot_id] = self.booked.get(slot.slot_id, 0) + 1
        order.easy_ship_status = self._v0_status(READY)
        self._plan_pick_up(package)
        return package

    def _plan_pick_up(self, package: ScheduledPackage) -> None:
        at = package.slot.start + int(self.profile.pickup_after_s)
        heapq.heappush(self._events, _Event(at, next(self._seq), package.order_id, package.generation))

    # --- createScheduledPackageBulk ---------------------------------------------------------------------

    def create_scheduled_package_bulk(self, seller_id: str, body: Any, now: float) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_input("The body must be a CreateScheduledPackagesRequest JSON object.")
        marketplace_id = self.marketplace(body)
        if body.get("labelFormat") not in LABEL_FORMATS:
            raise invalid_input(f"labelFormat must be one of {', '.join(LABEL_FORMATS)}.")
        entries = body.get("orderScheduleDetailsList")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BULK_ORDERS:
            raise invalid_input(f"orderScheduleDetailsList must list 1 to {MAX_BULK_ORDERS} orders.")
        if not all(isinstance(e, dict) and isinstance(e.get("amazonOrderId"), str) for e in entries):
            raise invalid_input("Each entry of orderScheduleDetailsList needs an amazonOrderId.")
        scheduled: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for entry in entries:
            details = entry.get("packageDetails") or {}
            try:
                if not isinstance(details, dict):
                    raise invalid_input("packageDetails must be an object.")
                order = self.order(seller_id, entry["amazonOrderId"], marketplace_id)
                scheduled.append(self._schedule(order, details, now, earliest=True).as_amazon())
            except SpApiError as exc:
                error = {"code": exc.code, "message": exc.message, "details": exc.details}
                rejected.append({"amazonOrderId": entry["amazonOrderId"], "error": error})
        response: dict[str, Any] = {"scheduledPackages": scheduled}
        if rejected:
            response["rejectedOrders"] = rejected
        return response

    # --- getScheduledPackage ----------------------------------------------------------------------------

    def get_scheduled_package(self, seller_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        order_id, marketplace_id = query.get("amazonOrderId"), query.get("marketplaceId")
        if not order_id or not marketplace_id:
            raise invalid_input("amazonOrderId and marketplaceId are required.")
        self.marketplace({"marketplaceId": marketplace_id})
        order = self.order(seller_id, order_id, marketplace_id, unshipped=False)
        package = self.packages.get(order.order_id)
        if package is None:
            raise SpApiError(
                404,
                "ResourceNotFound",
                "The specified resource does not exist.",
                f"Order {order.order_id} has no scheduled package.",
            )
        return package.as_amazon()

    # --- updateScheduledPackages ------------------------------------------------------------------------

    def update_scheduled_packages(self, seller_id: str, body: Any, now: float) -> dict[str, Any]:
        """All updates or none: each names a package of the seller, ReadyForPickup, and a bookable slot."""
        if not isinstance(body, dict):
            raise invalid_input("The body must be an UpdateScheduledPackagesRequest JSON object.")
        marketplace_id = self.marketplace(body)
        updates = body.get("updatePackageDetailsList")
        if not isinstance(updates, list) or not 1 <= len(updates) <= MAX_PACKAGES:
            raise invalid_input(f"updatePackageDetailsList must list 1 to {MAX_PACKAGES} packages.")
        planned: list[tuple[ScheduledPackage, Slot]] = []
        demand: dict[str, int] = {}
        for update in updates:
            ids = update.get("scheduledPackageId") if isinstance(update, dict) else None
            if not isinstance(ids, dict) or "packageTimeSlot" not in update:
                raise invalid_input("Each update needs scheduledPackageId and packageTimeSlot.")
            order = self.order(seller_id, ids.get("amazonOrderId"), marketplace_id, unshipped=False)
            package = self.packages.get(order.order_id)
            if package is None or ids.get("packageId") not in (None, package.package_id):
                raise SpApiError(
                    404,
                    "ResourceNotFound",
                    "The specified resource does not exist.",
                    f"No scheduled package {ids.get('packageId')} for order {order.order_id}.",
                )
            if package.status != READY:
                raise SpApiError(
                    400,
                    "OrderNotEligibleForRescheduling",
                    "Order is not eligible for rescheduling.",
                    f"Package {package.package_id} is {package.status}.",
                )
            slot = self.resolve_slot(update["packageTimeSlot"], marketplace_id, now)
            demand[slot.slot_id] = demand.get(slot.slot_id, 0) + (slot != package.slot)
            if self.booked.get(slot.slot_id, 0) + demand[slot.slot_id] > self.profile.slot_capacity:
                raise SpApiError(
                    400,
                    "RetryableAfterGettingNewSlots",
                    "The selected time slot is no longer available. Request a new time slot and try again.",
                    f"slotId {slot.slot_id} is full.",
                )
            planned.append((package, slot))
        for package, slot in planned:
            if slot != package.slot:
                self.booked[package.slot.slot_id] -= 1
                self.booked[slot.slot_id] = self.booked.get(slot.slot_id, 0) + 1
                package.slot = slot
                package.generation += 1
                self._plan_pick_up(package)
        return {"packages": [package.as_amazon() for package, _ in planned]}

    # --- the clock --------------------------------------------------------------------------------------

    def next_event_at(self) -> int | None:
        return self._events[0].at if self._events else None

    def step(self) -> None:
        """Apply the earliest scheduled status change (pick-up, then delivery)."""
        event = heapq.heappop(self._events)
        package = self.packages.get(event.order_id)
        if package is None or package.generation != event.generation:
            return
        order = self.book.orders[package.order_id]
        if package.status == READY:
            if order.current.status != "Unshipped":  # canceled meanwhile: the label is void
                package.status = LABEL_CANCELED
                order.easy_ship_status = V0_STATUS[LABEL_CANCELED]
                return
            package.status, package.picked_up_at = PICKED_UP, event.at
            order.easy_ship_status = self._v0_status(PICKED_UP)
            self._pick_up(order, package, event.at)
            at = event.at + int(self.profile.delivery_after_s)
            heapq.heappush(self._events, _Event(at, next(self._seq), package.order_id, package.generation))
        elif package.status == PICKED_UP:
            package.status, package.delivered_at = DELIVERED, event.at
            order.easy_ship_status = V0_STATUS[DELIVERED]

    def _v0_status(self, status: str) -> str:
        if self.profile.handover_method == "DROPOFF":
            return {READY: "PendingDropOff", PICKED_UP: "DroppedOff"}.get(status, V0_STATUS[status])
        return V0_STATUS[status]

    def truth(self, seller_id: str | None = None) -> list[dict[str, Any]]:
        return [p.truth() for p in self.packages.values() if seller_id in (None, p.seller_id)]


def _positive_number(raw: Any, name: str, minimum: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise invalid_input(f"{name} is required and must be a number.")
    if raw < minimum:
        raise invalid_input(f"{name} must be at least {minimum}, got {raw}.")
    return float(raw)


def _unit(raw: Any, allowed: tuple[str, ...], any_case: bool) -> str | None:
    """The model's spelling of unit ``raw``, or None when it is not one of ``allowed``."""
    if not isinstance(raw, str):
        return None
    if raw in allowed:
        return raw
    return next((unit for unit in allowed if unit.lower() == raw.lower()), None) if any_case else None


def parse_size(dimensions: Any, weight: Any, *, units_any_case: bool = True) -> PackageSize:
    """packageDimensions and packageWeight as the model bounds them (400 InvalidInput otherwise);
    ``units_any_case``: units in another case too (scenario ``easy_ship.units_any_case``)."""
    if not isinstance(dimensions, dict):
        raise invalid_input("packageDimensions (length, width, height, unit) is required.")
    if not isinstance(weight, dict):
        raise invalid_input("packageWeight (value, unit) is required.")
    sides = [
        _positive_number(dimensions.get(name), f"packageDimensions.{name}", MIN_DIMENSION_CM)
        for name in ("length", "width", "height")
    ]
    if _unit(dimensions.get("unit"), LENGTH_UNITS, units_any_case) is None:
        raise invalid_input(f"packageDimensions.unit must be one of {', '.join(LENGTH_UNITS)}.")
    value = _positive_number(weight.get("value"), "packageWeight.value", MIN_WEIGHT_G)
    unit = _unit(weight.get("unit"), WEIGHT_UNITS, units_any_case)
    if unit is None:
        raise invalid_input(f"packageWeight.unit must be one of {', '.join(WEIGHT_UNITS)}.")
    identifier = dimensions.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or not 1 <= len(identifier) <= MAX_STRING):
        raise invalid_input("packageDimensions.identifier must be a string of 1 to 255 characters.")
    return PackageSize(sides[0], sides[1], sides[2], value, str(unit), identifier)


def parse_items(order: Order, raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """packageItems (Items): items of the order, with optional serial numbers; default all items."""
    if raw is None:
        return tuple((item.order_item_id, ()) for item in order.items)
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ITEMS:
        raise invalid_input(f"packageItems must list 1 to {MAX_ITEMS} items.")
    items: list[tuple[str, tuple[str, ...]]] = []
    for entry in raw:
        item_id = entry.get("orderItemId") if isinstance(entry, dict) else None
        if not isinstance(item_id, str) or order.item(item_id) is None:
            raise invalid_input(f"orderItemId {item_id!r} is not an item of order {order.order_id}.")
        serials = entry.get("orderItemSerialNumbers") or []
        if (
            not isinstance(serials, list)
            or len(serials) > 100
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STRING for s in serials)
        ):
            raise invalid_input("orderItemSerialNumbers must list up to 100 strings of 1 to 255 characters.")
        items.append((item_id, tuple(serials)))
    return tuple(items)
