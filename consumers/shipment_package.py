"""One package's way to Amazon, for the shipment-write-back stage: the confirmShipment attempts, and
the one result it publishes (``shipments.confirmed`` or ``shipments.failed``) with the package's state
in Redis. Both ways of writing back use it: confirmShipment per package
(:mod:`ordersync.consumers.shipment_write_back`) and the batched fulfilment feed
(:mod:`ordersync.consumers.fulfillment_feed`). Not a stage of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial

from ordersync.errors import AmazonApiError, Permanent, QuotaUnavailable, Retryable, Throttled
from ordersync.pipeline.runtime import REDIS_PROBE_INTERVAL_S, StageRuntime
from ordersync.schemas.envelope import Envelope, Event
from ordersync.schemas.events import (
    EASY_SHIP,
    SHIP_PLUS,
    ConfirmationMethod,
    ShipmentConfirmed,
    ShipmentFailed,
    ShipmentRequested,
)
from ordersync.schemas.topics import SHIPMENTS_CONFIRMED, SHIPMENTS_FAILED, TopicSpec, order_key

log = logging.getLogger("ordersync.consumers.shipment_write_back")

ALREADY_FULFILLED = "PackageToUpdateNotFound"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt's error means for the package."""

    retry: bool
    outcome_unknown: bool
    already_confirmed: bool = False


def classify_attempt_error(error: Exception, earlier_outcome_unknown: bool) -> AttemptOutcome:
    """Retry transient faults (the request may or may not have reached Amazon); stop on refusals,
    except Amazon's "already fulfilled" after an unknown outcome, which means our earlier try landed."""
    if isinstance(error, AmazonApiError) and error.code == ALREADY_FULFILLED and earlier_outcome_unknown:
        return AttemptOutcome(retry=False, outcome_unknown=False, already_confirmed=True)
    if isinstance(error, Retryable):
        return AttemptOutcome(retry=True, outcome_unknown=True)
    return AttemptOutcome(retry=False, outcome_unknown=False)


def error_parts(error: Exception) -> tuple[str, str]:
    if isinstance(error, AmazonApiError):
        return error.code, error.amazon_message or str(error)
    return type(error).__name__, str(error) or type(error).__name__


def total_quantity(request: ShipmentRequested) -> int:
    return sum(item.quantity for item in request.items)


def confirmed_by_amazon(
    request: ShipmentRequested, programs: Collection[str]
) -> tuple[ConfirmationMethod, str] | None:
    """A package ordersync must not confirm, as Amazon's rules say: (how Amazon learns of it, why);
    None for a package ordersync confirms."""
    if EASY_SHIP in programs:
        return "easy-ship", (
            "Easy Ship order: Amazon's carrier ships it from a scheduled package; the seller does not"
            " confirm it"
        )
    if SHIP_PLUS in programs:
        return (
            "amazon-label",
            "Ship+ order: its Ship+ label confirms it (Amazon refuses confirmShipment, 400)",
        )
    if request.label_bought_on_amazon:
        return (
            "amazon-label",
            "label bought through Amazon (Buy Shipping): its purchase confirmed the shipment",
        )
    return None


@dataclass
class PackageWriteBack:
    """One package's way to Amazon: the attempts, then one published result."""

    runtime: StageRuntime
    envelope: Envelope[Event]
    request: ShipmentRequested
    marketplace: str | None

    @property
    def seller(self) -> str:
        return self.envelope.seller_id

    async def record_state(self, **fields: str | int) -> None:
        request = self.request
        await self.runtime.store.update_shipment_state(
            self.seller, request.amazon_order_id, request.package_reference_id, **fields
        )

    async def attempt(
        self, attempts: int, outcome_unknown: bool, *, budget: int | None = None
    ) -> tuple[ConfirmationMethod | None, Exception | None, int]:
        """Try until confirmed, refused, or out of this run's attempts (``budget``, by default
        ``writeback.max_attempts``; a redrive runs again): (method, error, attempts made in all)."""
        runtime, request = self.runtime, self.request
        client = runtime.amazon(runtime.channels.by_name(request.channel))
        max_attempts = attempts + (budget if budget is not None else runtime.settings.writeback.max_attempts)
        error: Exception | None = None
        while attempts < max_attempts:
            if outcome_unknown:
                # An earlier try may have reached Amazon: read the order before sending again, so
                # nothing is confirmed twice and a cancelled order is never confirmed.
                order = await runtime.retrying(
                    f"getOrder {request.amazon_order_id}", partial(client.get_order, request.amazon_order_id)
                )
                if order.order_status in ("Shipped", "InvoiceUnconfirmed"):
                    return "already-confirmed", None, attempts
                if order.order_status == "Canceled":
                    return (
                        None,
                        Permanent(f"order {request.amazon_order_id} is cancelled on Amazon"),
                        attempts,
                    )
            attempts += 1
            await self.record_state(
                status="Pending", attempts=attempts, last_attempt=runtime.clock.now().isoformat()
            )
            try:
                await client.confirm_shipment(request, self.marketplace or "")
                return "confirmShipment", None, attempts
            except Throttled as exc:
                attempts -= 1  # throttling is a wait, never a failed attempt
                await asyncio.sleep(exc.retry_after_s)
            except QuotaUnavailable as exc:
                attempts -= 1  # fail closed: nothing was sent
                log.error("%s: rate limiter unavailable, nothing sent: %s", request.amazon_order_id, exc)
                await asyncio.sleep(REDIS_PROBE_INTERVAL_S)
            except (Retryable, Permanent) as exc:
                verdict = classify_attempt_error(exc, outcome_unknown)
                if verdict.already_confirmed:
                    return "already-confirmed", None, attempts
                code, message = error_parts(exc)
                await self.record_state(
                    last_error=f"{code}: {message}",
                    outcome="unknown" if verdict.outcome_unknown else "refused",
                )
                outcome_unknown = outcome_unknown or verdict.outcome_unknown
                error = exc
                if not verdict.retry:
                    break
                if attempts < max_attempts:
                    await asyncio.sleep(runtime.settings.writeback.retry_backoff_s * 2 ** (attempts - 1))
        return None, error, attempts

    async def publish_confirmed(
        self, method: ConfirmationMethod, attempts: int, note: str | None = None
    ) -> None:
        request = self.request
        confirmed = ShipmentConfirmed(
            channel=request.channel,
            amazon_order_id=request.amazon_order_id,
            package_reference_id=request.package_reference_id,
            method=method,
            attempts=attempts,
            carrier_code=request.carrier_code,
            tracking_number=request.tracking_number,
            quantity=total_quantity(request),
            confirmed_at=self.runtime.clock.now(),
            note=note,
        )
        await self._publish(SHIPMENTS_CONFIRMED, confirmed)
        # Confirmed is final: the request kept for a retry-writeback is no longer needed.
        await self._settled(
            {"status": "Success", "outcome": "confirmed"}, forget=("request",), writeback="Success"
        )

    async def publish_failed(self, error: Exception | None, attempts: int) -> None:
        request = self.request
        code, message = error_parts(error) if error else ("Unknown", "no attempt was made")
        failed = ShipmentFailed(
            channel=request.channel,
            amazon_order_id=request.amazon_order_id,
            package_reference_id=request.package_reference_id,
            attempts=attempts,
            error_code=code,
            error_message=message,
            carrier_code=request.carrier_code,
            shipping_method=request.shipping_method,
            tracking_number=request.tracking_number,
            ship_date=request.ship_date,
            quantity=total_quantity(request),
        )
        await self._publish(SHIPMENTS_FAILED, failed)
        await self._settled(
            {"status": "Failed", "last_error": f"{code}: {message}"},
            writeback="Failed",
            writeback_error=f"{code}: {message}",
        )

    async def _settled(
        self, state: dict[str, str | int], *, forget: tuple[str, ...] = (), **order_status: str
    ) -> None:
        """The package's final state (``forget``: fields it no longer needs) and its order's
        write-back status, in one round trip."""
        store, request = self.runtime.store, self.request
        async with store.redis.pipeline(transaction=False) as pipe:
            order_id, package_id = request.amazon_order_id, request.package_reference_id
            store.queue_shipment_state(pipe, self.seller, order_id, package_id, **state)
            if forget:
                store.queue_shipment_forget(pipe, self.seller, order_id, package_id, *forget)
            store.queue_order_status(pipe, self.seller, request.amazon_order_id, **order_status)
            await pipe.execute()

    async def _publish(self, spec: TopicSpec, event: Event) -> None:
        await self.runtime.emit(
            spec,
            order_key(self.seller, self.request.amazon_order_id),
            Envelope.wrap(
                event,
                seller_id=self.seller,
                marketplace_id=self.marketplace,
                correlation_id=self.envelope.correlation_id,
            ),
        )
