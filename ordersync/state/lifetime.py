"""How long an order's working state stays in Redis: tied to the order's life, not a fixed horizon.

An imported order's working state (its sales order, the invoices counted and package numbers, each
package's write-back state, its status fields) is kept until the order *closes*: its delivery plus
``order_state.after_delivery_days``, or the channel's longer personal-data retention, reckoned as the
privacy rules reckon delivery (the day the buyer's data is sealed under, else the latest ship date plus
two weeks, else the purchase plus 30 days). It is also kept at least ``after_last_write_days`` after it
was last written, so an order still being invoiced or written back never loses it.

Each TTL is a duration measured on the stage's clock (Amazon's time) and handed to Redis as EX: an
absolute EXPIREAT would be read on Redis's own clock, which is not Amazon's in a simulation.

The small things that say an order was imported (its dedupe marks and sales-order code) stay for
:data:`ordersync.state.keys.ORDER_STATE_TTL_S`, Amazon's order-change horizon with margin: a version of
a closed order downloaded later is recognised and never becomes a second sales order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ordersync.privacy.orders import PURCHASE_TO_DELIVERY, SHIP_TO_DELIVERY
from ordersync.privacy.sealing import KEY_ID, RETENTION_DAYS, retention_of
from ordersync.schemas.events import SalesOrder
from ordersync.settings import OrderStateSettings


@dataclass(frozen=True)
class OrderLifetime:
    """When an imported order closes and how long each write of its working state keeps it."""

    after_delivery: timedelta = timedelta(days=RETENTION_DAYS)
    after_last_write: timedelta = timedelta(days=7)

    @classmethod
    def of(cls, settings: OrderStateSettings) -> OrderLifetime:
        return cls(
            timedelta(days=settings.after_delivery_days), timedelta(days=settings.after_last_write_days)
        )

    def closes_at(self, order: SalesOrder) -> datetime:
        """When ``order`` closes: its delivery plus ``after_delivery`` (or its sealed personal data's
        longer retention)."""
        if order.personal is not None:
            match = KEY_ID.match(order.personal.key_id)
            if match is not None:
                # The key's day is the delivery day; its data goes at that day's end plus the retention.
                day_ends = datetime.fromisoformat(match["day"]).replace(tzinfo=UTC) + timedelta(days=1)
                kept = max(self.after_delivery, timedelta(days=retention_of(order.personal.key_id)))
                return day_ends + kept
        if order.latest_ship_date is not None:
            return order.latest_ship_date + SHIP_TO_DELIVERY + self.after_delivery
        return order.purchase_date + PURCHASE_TO_DELIVERY + self.after_delivery

    def ttl_s(self, order: SalesOrder, now: datetime) -> int:
        """Seconds ``order``'s working state written at ``now`` (the stage's clock) is kept: until it
        closes, and at least ``after_last_write``."""
        remaining = self.closes_at(order) - now
        return int(max(remaining, self.after_last_write).total_seconds())


#: The settings' defaults (30 days after delivery, 7 after the last write).
DEFAULT_LIFETIME = OrderLifetime()
