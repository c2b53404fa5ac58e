"""The Feeds API 2021-06-30 of the simulator: feed documents (with their presigned upload and
download URLs), feeds in per-seller, per-family queues, and what processing a feed does.

Flow, as Amazon documents it (docs: feeds-api-v2021-06-30-use-case-guide):

1. createFeedDocument gives a document id and a presigned URL (valid 5 minutes) that the simulator
   itself serves under ``/_sim/s3/``; the caller PUTs the content there with the same Content-Type.
2. createFeed queues the feed (IN_QUEUE). Each seller has one queue per family (order feeds;
   listings and inventory feeds); a family's feeds are processed one after another, families in
   parallel.
3. A feed becomes IN_PROGRESS when its queue reaches it, and DONE (or FATAL) after its processing
   time. Its messages take effect at that instant, stamped with it, and a result document (a
   processing report) is written: XML for XML feeds, JSON for JSON_LISTINGS_FEED.

Processing happens on the simulated clock, lazily: :meth:`FeedEngine.next_event` tells the state
when the next feed changes status, so order changes made by feeds interleave with the order
book's own scheduled changes in time order.

Result codes are the simulator's (modelled on Amazon's, which documents few of them); clients must
rely on ``ResultCode``, ``AdditionalInfo/AmazonOrderID`` and the description, not on the numbers.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import itertools
import json
import random
import secrets
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol
from urllib.parse import urlencode

from lxml import etree

from ordersync.simulator.clock import epoch_to_iso, parse_iso
from ordersync.simulator.easyship_documents import (
    EASYSHIP_DOCUMENTS_FEED,
    DocumentMessageError,
    DocumentRequest,
    parse_document_request,
)
from ordersync.simulator.scenario import FeedProfile

FeedStatus = Literal["IN_QUEUE", "IN_PROGRESS", "DONE", "FATAL", "CANCELLED"]
FEED_STATUSES: tuple[FeedStatus, ...] = ("CANCELLED", "DONE", "FATAL", "IN_PROGRESS", "IN_QUEUE")
Family = Literal["orders", "listings"]

#: Feed types the simulator processes, by family.
ORDER_FEED_TYPES = frozenset(
    {
        "POST_ORDER_FULFILLMENT_DATA",
        "POST_ORDER_ACKNOWLEDGEMENT_DATA",
        "POST_FLAT_FILE_FULFILLMENT_DATA",
        "POST_PAYMENT_ADJUSTMENT_DATA",
        "POST_FLAT_FILE_ORDER_ACKNOWLEDGEMENT_DATA",
        "POST_FLAT_FILE_PAYMENT_ADJUSTMENT_DATA",
        EASYSHIP_DOCUMENTS_FEED,
    }
)
LISTINGS_FEED_TYPES = frozenset({"JSON_LISTINGS_FEED"})
#: Retired XML/flat-file listings and inventory feeds: accepted, then FATAL (docs: feed-type-values).
RETIRED_FEED_TYPES = frozenset(
    {
        "POST_INVENTORY_AVAILABILITY_DATA",
        "POST_PRODUCT_DATA",
        "POST_PRODUCT_PRICING_DATA",
        "POST_PRODUCT_RELATIONSHIP_DATA",
        "POST_PRODUCT_IMAGE_DATA",
        "POST_PRODUCT_OVERRIDES_DATA",
        "POST_FLAT_FILE_INVLOADER_DATA",
        "POST_FLAT_FILE_LISTINGS_DATA",
        "POST_FLAT_FILE_PRICEANDQUANTITYONLY_UPDATE_DATA",
    }
)
KNOWN_FEED_TYPES = ORDER_FEED_TYPES | LISTINGS_FEED_TYPES | RETIRED_FEED_TYPES
#: Feed types whose processing the simulator models; other known ones end FATAL, saying so.
PROCESSED_FEED_TYPES = frozenset(
    {
        "POST_ORDER_FULFILLMENT_DATA",
        "POST_ORDER_ACKNOWLEDGEMENT_DATA",
        "JSON_LISTINGS_FEED",
        EASYSHIP_DOCUMENTS_FEED,
    }
)
#: The bucket name of JSON_LISTINGS_FEED's own createFeed limit: 5 per 5 minutes per seller and region
#: (feeds_2021-06-30.json createFeed: "differs from the rate limit for createFeed"; docs:
#: building-listings-management-workflows-guide).
LISTINGS_FEED_OPERATION = "createFeed:JSON_LISTINGS_FEED"
LISTINGS_FEED_PLAN = (5 / 300, 5)

FEEDS_KEPT_S = 90 * 86400.0
#: The presigned download URL's parameter setting the Content-Encoding S3 answers with.
CONTENT_ENCODING_PARAMETER = "response-content-encoding"

# --- result codes (the simulator's) ------------------------------------------------------------------
#: The XML is not well formed, or not an AmazonEnvelope of the expected MessageType.
CODE_ILL_FORMED = "50001"
#: A message does not follow the OrderFulfillment / OrderAcknowledgement structure.
CODE_INVALID_MESSAGE = "25"
#: No such order for this seller.
CODE_UNKNOWN_ORDER = "18028"
#: The order is canceled.
CODE_CANCELED_ORDER = "18029"
#: More units than are left unshipped (including an order already shipped in full).
CODE_QUANTITY_ABOVE_UNSHIPPED = "18030"
#: The order cannot be changed this way in its state (Pending, fulfilled by Amazon, shipped).
CODE_ORDER_STATE = "18031"
#: The item is not an item of the order.
CODE_UNKNOWN_ITEM = "18032"
#: The feed's content type or content does not match its feed type.
CODE_WRONG_CONTENT = "90061"
#: The feed type is retired or not processed by the simulator.
CODE_RETIRED = "90000"
#: POST_EASYSHIP_DOCUMENTS made FATAL by the scenario (``easy_ship.documents_fatal``).
CODE_DOCUMENTS_UNAVAILABLE = "90210"


class S3Error(Exception):
    """An error from the simulated document store, answered as S3 does (XML)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{_xml_text(self.message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
        ).encode()


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def family_of(feed_type: str) -> Family:
    return "orders" if feed_type in ORDER_FEED_TYPES else "listings"


@dataclass
class Document:
    """A document behind a presigned URL: a feed's input or result, or a report's (Reports API)."""

    document_id: str
    seller_id: str
    content_type: str
    created: float
    kind: Literal["input", "result", "report"]
    content: bytes | None = None
    compression: Literal["GZIP"] | None = None
    uploaded_at: float | None = None
    #: When the document is deleted (report documents are kept 30 days); None: kept.
    expires_at: float | None = None


@dataclass(frozen=True)
class Issue:
    """One problem with a listings message, as the JSON processing report names it."""

    code: str
    message: str
    severity: Literal["ERROR", "WARNING"] = "ERROR"
    attribute_name: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "severity": self.severity, "message": self.message}
        if self.attribute_name:
            body["attributeName"] = self.attribute_name
        return body


@dataclass
class MessageResult:
    """What became of one feed message (for the truth API and the report)."""

    message_id: int | None
    key: str
    """The message's AmazonOrderID or SKU ("" when the message has none)."""
    ok: bool
    code: str = ""
    description: str = ""
    severity: Literal["ERROR", "WARNING"] = "ERROR"
    detail: dict[str, Any] = field(default_factory=dict)
    #: The attribute the problem is with (listings reports' ``attributeName``).
    attribute_name: str | None = None
    #: Further problems with the same message (listings reports list each).
    more: tuple[Issue, ...] = ()

    def issues(self) -> list[Issue]:
        if self.ok:
            return []
        return [Issue(self.code, self.description, self.severity, self.attribute_name), *self.more]

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message_id": self.message_id, "key": self.key, "ok": self.ok}
        if not self.ok:
            body.update({"code": self.code, "description": self.description, "severity": self.severity})
            if self.attribute_name:
                body["attribute_name"] = self.attribute_name
            if self.more:
                body["more"] = [i.as_json() for i in self.more]
        if self.detail:
            body["detail"] = self.detail
        return body


@dataclass
class Feed:
    feed_id: str
    seller_id: str
    feed_type: str
    marketplace_ids: tuple[str, ...]
    input_document_id: str
    feed_options: dict[str, str]
    created: float
    family: Family
    status: FeedStatus = "IN_QUEUE"
    queue_delay: float = 0.0
    duration: float = 0.0
    stalled: bool = False
    started: float | None = None
    ended: float | None = None
    result_document_id: str | None = None
    results: list[MessageResult] = field(default_factory=list)
    fatal_reason: str | None = None

    def as_amazon(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "feedId": self.feed_id,
            "feedType": self.feed_type,
            "marketplaceIds": list(self.marketplace_ids),
            "createdTime": epoch_to_iso(self.created),
            "processingStatus": self.status,
        }
        if self.started is not None:
            body["processingStartTime"] = epoch_to_iso(self.started)
        if self.ended is not None:
            body["processingEndTime"] = epoch_to_iso(self.ended)
        if self.result_document_id is not None:
            body["resultFeedDocumentId"] = self.result_document_id
        return body


@dataclass(frozen=True)
class FulfillmentItem:
    order_item_id: str
    quantity: int | None


@dataclass(frozen=True)
class FulfillmentMessage:
    message_id: int
    order_id: str
    fulfillment_date: float
    carrier_code: str | None
    carrier_name: str | None
    shipping_method: str | None
    tracking_number: str | None
    items: tuple[FulfillmentItem, ...]


@dataclass(frozen=True)
class AcknowledgementMessage:
    message_id: int
    order_id: str
    status_code: Literal["Success", "Failure"]
    items: tuple[tuple[str, str | None], ...]
    """(AmazonOrderItemCode, CancelReason)."""
    merchant_order_id: str | None = None
    """MerchantOrderID: the seller's order number, kept on the order when acknowledged (Success)."""


class OrderFeedTarget(Protocol):
    """What order feeds act on; implemented by the simulator state (the order book's rules)."""

    def fulfil(
        self, seller_id: str, message: FulfillmentMessage, feed_id: str, at: float
    ) -> MessageResult: ...

    def acknowledge(self, seller_id: str, message: AcknowledgementMessage, at: float) -> MessageResult: ...

    def easy_ship_documents(
        self, seller_id: str, request: DocumentRequest, at: float
    ) -> tuple[MessageResult, bytes | None]:
        """A POST_EASYSHIP_DOCUMENTS message's outcome and, when it succeeds, its PDF."""
        ...

    def report_document_made(self, seller_id: str, region: str, document: Document, at: float) -> None:
        """An Easy Ship PDF is ready: served by getReportDocument from now on."""
        ...


@dataclass
class Listing:
    """A seller's listing: its ``fulfillment_availability`` entries by fulfillment channel code;
    ``quantity`` is the DEFAULT (seller-fulfilled) entry's."""

    sku: str
    quantity: int | None
    updated_at: float | None = None
    feed_id: str | None = None
    product_type: str | None = None
    availability: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.availability and self.quantity is not None:
            self.availability = {
                DEFAULT_CHANNEL: {"fulfillment_channel_code": DEFAULT_CHANNEL, "quantity": self.quantity}
            }

    def set_availability(self, entries: dict[str, dict[str, Any]]) -> None:
        self.availability = entries
        quantity = entries.get(DEFAULT_CHANNEL, {}).get("quantity")
        self.quantity = quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None

    def as_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "quantity": self.quantity,
            "fulfillment_availability": list(self.availability.values()),
            "product_type": self.product_type,
            "updated_at": None if self.updated_at is None else epoch_to_iso(self.updated_at),
            "feed_id": self.feed_id,
        }


#: The seller-fulfilled channel of ``fulfillment_availability``.
DEFAULT_CHANNEL = "DEFAULT"
FULFILLMENT_AVAILABILITY = "fulfillment_availability"
#: What a ``fulfillment_availability`` value must be, as Amazon's product type definitions state it
#: (an array of at least one entry; ``fulfillment_channel_code``, the selector, required;
#: ``quantity`` and ``lead_time_to_ship_max_days`` integers >= 0; ``restock_date`` a date;
#: ``is_inventory_available`` a boolean; no other property) and the Listings Items model
#: (FulfillmentAvailability: fulfillmentChannelCode required, quantity an integer, minimum 0).
FULFILLMENT_AVAILABILITY_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["fulfillment_channel_code"],
        "properties": {
            "fulfillment_channel_code": {"type": "string", "minLength": 1},
            "quantity": {"type": "integer", "minimum": 0},
            "lead_time_to_ship_max_days": {"type": "integer", "minimum": 0},
            "restock_date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}"},
            "is_inventory_available": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
}
#: How Amazon reports attribute problems (listings-feed-processing-report-schema-v2.example.json:
#: 99022 "... does not have enough values" with ``attributeName``; the same message for a
#: fulfillment_availability without fulfillment_channel_code in jlevers/selling-partner-api#493;
#: 4000001 "The provided value for '...' is invalid." in selling-partner-api-models#5219).
CODE_MISSING_VALUE = "99022"
CODE_INVALID_VALUE = "4000001"


@cache
def listings_feed_schema() -> dict[str, Any]:
    text = resources.files("ordersync.amazon").joinpath("models", "listings-feed-schema-v2.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class FeedEngine:
    """Documents, feeds, queues and listings of every seller (guarded by the state's lock)."""

    def __init__(self, profile: FeedProfile, seed: int, target: OrderFeedTarget) -> None:
        self.profile = profile
        self.target = target
        self._rng = random.Random(f"{seed}/feeds")
        self._key = secrets.token_bytes(32)
        self._feed_ids = itertools.count(50001019000 + random.Random(seed).randrange(1000) * 1000)
        self.documents: dict[str, Document] = {}
        self.feeds: dict[str, Feed] = {}
        self._queues: dict[tuple[str, Family], list[Feed]] = {}
        self._queue_free_at: dict[tuple[str, Family], float] = {}
        self.listings: dict[str, dict[str, Listing]] = {}
        #: POST_EASYSHIP_DOCUMENTS feeds end FATAL (scenario ``easy_ship.documents_fatal``).
        self.easy_ship_documents_fatal = False

    # --- documents ----------------------------------------------------------------------------------

    def create_document(self, seller_id: str, content_type: str, now: float, region: str) -> Document:
        document_id = f"amzn1.tortuga.4.{region}.{uuid.uuid4()}.T{secrets.token_hex(6).upper()}"
        doc = Document(document_id, seller_id, content_type, now, "input")
        self.documents[document_id] = doc
        return doc

    def _signature(self, document_id: str, method: str, expires_at: int, content_encoding: str = "") -> str:
        raw = f"{method}\n{document_id}\n{expires_at}\n{content_encoding}".encode()
        return hmac.new(self._key, raw, hashlib.sha256).hexdigest()

    def presigned_path(
        self,
        doc: Document,
        method: Literal["PUT", "GET"],
        now: float,
        *,
        content_encoding: str | None = None,
    ) -> str:
        """``/_sim/s3/{id}?...``: the document's presigned URL path, valid ``document_url_ttl_s``.
        ``content_encoding``: the Content-Encoding its download answers with (signed, like S3's
        ``response-content-encoding``)."""
        expires_at = int(now + self.profile.document_url_ttl_s)
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Date": epoch_to_iso(now).replace("-", "").replace(":", ""),
            "X-Amz-Expires": str(int(self.profile.document_url_ttl_s)),
            "X-Amz-Expires-At": str(expires_at),
        }
        if content_encoding:
            query[CONTENT_ENCODING_PARAMETER] = content_encoding
        query["X-Amz-Signature"] = self._signature(
            doc.document_id, method, expires_at, content_encoding or ""
        )
        return f"/_sim/s3/{doc.document_id}?{urlencode(query)}"

    def _check_url(self, document_id: str, method: str, query: dict[str, str], now: float) -> Document:
        try:
            expires_at = int(query.get("X-Amz-Expires-At", ""))
        except ValueError:
            raise S3Error(403, "AccessDenied", "Query-string authentication requires parameters.") from None
        expected = self._signature(document_id, method, expires_at, query.get(CONTENT_ENCODING_PARAMETER, ""))
        if not hmac.compare_digest(expected, query.get("X-Amz-Signature", "")):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if now > expires_at:
            raise S3Error(403, "AccessDenied", "Request has expired")
        doc = self.documents.get(document_id)
        if doc is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        return doc

    def upload(
        self, document_id: str, query: dict[str, str], content_type: str | None, content: bytes, now: float
    ) -> None:
        doc = self._check_url(document_id, "PUT", query, now)
        if doc.kind != "input":
            raise S3Error(403, "AccessDenied", "Access Denied")
        if (content_type or "").replace(" ", "").lower() != doc.content_type.replace(" ", "").lower():
            # The content type is part of what the URL was signed for.
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        doc.content = content
        doc.uploaded_at = now

    def download(self, document_id: str, query: dict[str, str], now: float) -> Document:
        doc = self._check_url(document_id, "GET", query, now)
        if doc.content is None or (doc.expires_at is not None and now >= doc.expires_at):
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        return doc

    # --- feeds --------------------------------------------------------------------------------------

    def create_feed(  # noqa: PLR0917 - the createFeed specification, field by field
        self,
        seller_id: str,
        feed_type: str,
        marketplace_ids: tuple[str, ...],
        document: Document,
        options: dict[str, str],
        now: float,
    ) -> Feed:
        family = family_of(feed_type)
        rng = self._rng
        queue_delay = rng.uniform(*self.profile.queue_delay_s)
        duration = rng.uniform(*self.profile.duration_s)
        stalled = rng.random() < self.profile.stall_share
        stall = rng.uniform(*self.profile.stall_s)
        feed = Feed(
            feed_id=str(next(self._feed_ids)),
            seller_id=seller_id,
            feed_type=feed_type,
            marketplace_ids=marketplace_ids,
            input_document_id=document.document_id,
            feed_options=options,
            created=float(int(now)),
            family=family,
            queue_delay=queue_delay + (stall if stalled else 0.0),
            duration=duration,
            stalled=stalled,
        )
        self.feeds[feed.feed_id] = feed
        self._queues.setdefault((seller_id, family), []).append(feed)
        return feed

    def cancel(self, feed: Feed, now: float) -> None:
        feed.status = "CANCELLED"
        feed.ended = now
        queue = self._queues.get((feed.seller_id, feed.family), [])
        if feed in queue:
            queue.remove(feed)

    def _next_for(self, key: tuple[str, Family]) -> tuple[float, Feed] | None:
        queue = self._queues.get(key)
        if not queue:
            return None
        head = queue[0]
        if head.status == "IN_QUEUE":
            start = max(head.created + head.queue_delay, self._queue_free_at.get(key, float("-inf")))
            return start, head
        assert head.started is not None
        return head.started + head.duration, head

    def next_event(self) -> tuple[float, Feed] | None:
        """The earliest upcoming status change of any feed: (when, feed)."""
        best: tuple[float, Feed] | None = None
        for key in self._queues:
            found = self._next_for(key)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return best

    def step(self, at: float, feed: Feed) -> None:
        """Apply the status change :meth:`next_event` returned, at its time."""
        key = (feed.seller_id, feed.family)
        if feed.status == "IN_QUEUE":
            feed.status = "IN_PROGRESS"
            feed.started = float(int(at))
            return
        self._process(feed, at)
        feed.ended = float(int(at))
        self._queues[key].remove(feed)
        self._queue_free_at[key] = at

    # --- processing -------------------------------------------------------------------------------------

    def _process(self, feed: Feed, at: float) -> None:
        doc = self.documents[feed.input_document_id]
        if feed.feed_type in RETIRED_FEED_TYPES:
            self._fatal(feed, at, CODE_RETIRED, f"The feed type {feed.feed_type} is no longer supported.")
        elif feed.feed_type not in PROCESSED_FEED_TYPES:
            self._fatal(feed, at, CODE_RETIRED, f"The simulator does not process {feed.feed_type} feeds.")
        elif doc.content is None:
            self._fatal(feed, at, CODE_WRONG_CONTENT, "The feed document was never uploaded.")
        elif feed.feed_type == "JSON_LISTINGS_FEED":
            self._process_listings(feed, doc, at)
        elif feed.feed_type == EASYSHIP_DOCUMENTS_FEED and self.easy_ship_documents_fatal:
            self._fatal(feed, at, CODE_DOCUMENTS_UNAVAILABLE, "Easy Ship documents cannot be generated now.")
        else:
            self._process_xml(feed, doc, at)

    def _fatal(self, feed: Feed, at: float, code: str, description: str) -> None:
        feed.status = "FATAL"
        feed.fatal_reason = description
        feed.results = [MessageResult(None, "", False, code, description)]
        if feed.feed_type == "JSON_LISTINGS_FEED":
            report = self._listings_report(feed, processed=0, accepted=0, invalid=0)
            self._write_result(feed, json.dumps(report).encode(), "application/json", at)
        else:
            self._write_result(feed, self._xml_report(feed, 0, 0), "text/xml; charset=UTF-8", at)

    def _write_result(self, feed: Feed, content: bytes, content_type: str, at: float) -> None:
        region = feed.input_document_id.split(".")[3] if feed.input_document_id.count(".") > 3 else "na"
        doc = self.create_document(feed.seller_id, content_type, at, region)
        doc.kind = "result"
        if self.profile.compress_reports:
            doc.content = gzip.compress(content, mtime=0)
            doc.compression = "GZIP"
        else:
            doc.content = content
        doc.uploaded_at = at
        feed.result_document_id = doc.document_id

    # --- XML order feeds --------------------------------------------------------------------------------

    def _process_xml(self, feed: Feed, doc: Document, at: float) -> None:
        if "xml" not in doc.content_type.lower():
            self._fatal(
                feed,
                at,
                CODE_WRONG_CONTENT,
                f"The content type {doc.content_type} does not match the feed type {feed.feed_type} (XML).",
            )
            return
        assert doc.content is not None
        expected = {
            "POST_ORDER_FULFILLMENT_DATA": "OrderFulfillment",
            EASYSHIP_DOCUMENTS_FEED: "EasyShipDocument",
        }.get(feed.feed_type, "OrderAcknowledgement")
        try:
            messages = parse_envelope(doc.content, expected, feed.seller_id)
        except EnvelopeError as exc:
            self._fatal(feed, at, CODE_ILL_FORMED, str(exc))
            return
        results: list[MessageResult] = []
        seen: set[int] = set()
        for message_id, element in messages:
            if message_id is not None and message_id in seen:
                results.append(
                    MessageResult(message_id, "", False, CODE_INVALID_MESSAGE, "MessageID is not unique.")
                )
                continue
            if message_id is not None:
                seen.add(message_id)
            results.append(self._apply_xml_message(feed, expected, message_id, element, at))
        feed.results = results
        feed.status = "DONE"
        ok = sum(1 for r in results if r.ok)
        self._write_result(feed, self._xml_report(feed, len(results), ok), "text/xml; charset=UTF-8", at)

    def _apply_xml_message(
        self, feed: Feed, expected: str, message_id: int | None, element: etree._Element, at: float
    ) -> MessageResult:
        try:
            if message_id is None:
                raise MessageError("MessageID is required and must be a positive integer.", "")
            if expected == "OrderFulfillment":
                return self.target.fulfil(
                    feed.seller_id, parse_fulfillment(message_id, element), feed.feed_id, at
                )
            if expected == "EasyShipDocument":
                return self._easy_ship_documents(feed, message_id, element, at)
            return self.target.acknowledge(feed.seller_id, parse_acknowledgement(message_id, element), at)
        except MessageError as exc:
            return MessageResult(message_id, exc.key, False, CODE_INVALID_MESSAGE, str(exc))

    def _easy_ship_documents(
        self, feed: Feed, message_id: int, element: etree._Element, at: float
    ) -> MessageResult:
        """One EasyShipDocument message: its PDF stored as a document whose id is the ReportReferenceId."""
        try:
            request = parse_document_request(message_id, element)
        except DocumentMessageError as exc:
            raise MessageError(str(exc), "") from None
        result, pdf = self.target.easy_ship_documents(feed.seller_id, request, at)
        if pdf is not None:
            region = feed.input_document_id.split(".")[3] if feed.input_document_id.count(".") > 3 else "na"
            document = self.create_document(feed.seller_id, "application/pdf", at, region)
            document.kind = "report"  # a GET_EASYSHIP_DOCUMENTS report document, not a feed's
            document.content, document.uploaded_at = pdf, at
            self.target.report_document_made(feed.seller_id, region, document, at)
            result.detail["report_reference_id"] = document.document_id
        return result

    def _xml_report(self, feed: Feed, processed: int, successful: int) -> bytes:
        root = etree.Element("AmazonEnvelope", nsmap={"xsi": "http://www.w3.org/2001/XMLSchema-instance"})
        root.set("{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation", "amzn-envelope.xsd")
        header = etree.SubElement(root, "Header")
        etree.SubElement(header, "DocumentVersion").text = "1.02"
        etree.SubElement(header, "MerchantIdentifier").text = feed.seller_id
        etree.SubElement(root, "MessageType").text = "ProcessingReport"
        message = etree.SubElement(root, "Message")
        etree.SubElement(message, "MessageID").text = "1"
        report = etree.SubElement(message, "ProcessingReport")
        etree.SubElement(report, "DocumentTransactionID").text = feed.feed_id
        etree.SubElement(report, "StatusCode").text = "Complete"
        summary = etree.SubElement(report, "ProcessingSummary")
        errors = sum(1 for r in feed.results if not r.ok and r.severity == "ERROR")
        warnings = sum(1 for r in feed.results if not r.ok and r.severity == "WARNING")
        for name, value in (
            ("MessagesProcessed", processed),
            ("MessagesSuccessful", successful),
            ("MessagesWithError", errors if processed else 0),
            ("MessagesWithWarning", warnings),
        ):
            etree.SubElement(summary, name).text = str(value)
        for result in feed.results:
            if result.ok:
                continue
            node = etree.SubElement(report, "Result")
            etree.SubElement(node, "MessageID").text = str(result.message_id or 0)
            etree.SubElement(node, "ResultCode").text = "Error" if result.severity == "ERROR" else "Warning"
            etree.SubElement(node, "ResultMessageCode").text = result.code
            etree.SubElement(node, "ResultDescription").text = result.description
            if result.key:
                info = etree.SubElement(node, "AdditionalInfo")
                etree.SubElement(info, "AmazonOrderID").text = result.key
        for result in feed.results:
            reference = result.detail.get("report_reference_id") if result.ok else None
            if reference is not None:  # POST_EASYSHIP_DOCUMENTS (see easyship_documents.py)
                node = etree.SubElement(report, "EasyShipDocumentResult")
                etree.SubElement(node, "MessageID").text = str(result.message_id or 0)
                etree.SubElement(node, "AmazonOrderID").text = result.key
                etree.SubElement(node, "ReportReferenceId").text = str(reference)
        out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        return out

    # --- JSON_LISTINGS_FEED -------------------------------------------------------------------------------

    def seller_listings(self, seller_id: str) -> dict[str, Listing]:
        return self.listings.setdefault(seller_id, {})

    def patch_listing(
        self, seller_id: str, sku: str, product_type: str, patches: list[dict[str, Any]], at: float
    ) -> tuple[str, list[dict[str, Any]]]:
        """patchListingsItem: the same rules and the same effect as a listings feed's PATCH message,
        at once; (status ACCEPTED or INVALID, issues)."""
        raw = {"messageId": 1, "sku": sku, "operationType": "PATCH", "productType": product_type}
        raw["patches"] = patches
        issues = _attribute_issues(raw)
        if not issues:
            result = _apply_listing(self.seller_listings(seller_id), raw, "patchListingsItem", at)
            if not result.ok:
                issues = [Issue(result.code, result.description)]
        return ("INVALID" if issues else "ACCEPTED"), [issue.as_json() for issue in issues]

    def _process_listings(self, feed: Feed, doc: Document, at: float) -> None:
        import jsonschema  # noqa: PLC0415 - loaded only when a listings feed is processed

        if "json" not in doc.content_type.lower():
            self._fatal(
                feed,
                at,
                CODE_WRONG_CONTENT,
                f"The content type {doc.content_type} does not match the feed type JSON_LISTINGS_FEED.",
            )
            return
        assert doc.content is not None
        try:
            data = json.loads(doc.content)
        except ValueError as exc:
            self._fatal(feed, at, "4000001", f"The feed is not valid JSON: {exc}.")
            return
        validator = jsonschema.Draft7Validator(listings_feed_schema())
        invalid: dict[int, list[str]] = {}
        for error in validator.iter_errors(data):
            path = list(error.absolute_path)
            if len(path) >= 2 and path[0] == "messages" and isinstance(path[1], int):
                invalid.setdefault(path[1], []).append(_schema_error_text(error))
            else:
                self._fatal(
                    feed,
                    at,
                    "4000001",
                    f"The feed does not follow the listings feed schema: {_schema_error_text(error)}",
                )
                return
        if data["header"]["sellerId"] != feed.seller_id:
            self._fatal(
                feed,
                at,
                "4000002",
                f"header.sellerId {data['header']['sellerId']} is not the submitting seller.",
            )
            return
        listings = self.seller_listings(feed.seller_id)
        results: list[MessageResult] = []
        seen: set[int] = set()
        for index, raw in enumerate(data["messages"]):
            message_id = raw.get("messageId") if isinstance(raw, dict) else None
            message_id = (
                message_id if isinstance(message_id, int) and not isinstance(message_id, bool) else None
            )
            sku = str(raw.get("sku", "")) if isinstance(raw, dict) else ""
            if index in invalid:
                results.append(MessageResult(message_id, sku, False, "4000001", "; ".join(invalid[index])))
            elif message_id in seen:
                results.append(MessageResult(message_id, sku, False, "4000003", "messageId is not unique."))
            elif issues := _attribute_issues(raw):
                first, *more = issues
                results.append(
                    MessageResult(
                        message_id,
                        sku,
                        False,
                        first.code,
                        first.message,
                        first.severity,
                        attribute_name=first.attribute_name,
                        more=tuple(more),
                    )
                )
            else:
                results.append(_apply_listing(listings, raw, feed.feed_id, at))
            if message_id is not None:
                seen.add(message_id)
        feed.results = results
        feed.status = "DONE"
        accepted = sum(1 for r in results if r.ok)
        report = self._listings_report(feed, len(results), accepted, len(results) - accepted)
        self._write_result(feed, json.dumps(report).encode(), "application/json", at)

    def _listings_report(self, feed: Feed, processed: int, accepted: int, invalid: int) -> dict[str, Any]:
        issues: list[dict[str, Any]] = []
        for r in feed.results:
            for problem in r.issues():
                issue: dict[str, Any] = {}
                if r.message_id is not None:
                    issue["messageId"] = r.message_id
                if r.key:
                    issue["sku"] = r.key
                issues.append({**issue, **problem.as_json()})
        return {
            "header": {"sellerId": feed.seller_id, "version": "2.0", "feedId": feed.feed_id},
            "issues": issues,
            "summary": {
                "errors": sum(1 for i in issues if i["severity"] == "ERROR"),
                "warnings": sum(1 for i in issues if i["severity"] == "WARNING"),
                "messagesProcessed": processed,
                "messagesAccepted": accepted,
                "messagesInvalid": invalid,
            },
        }

    # --- truth ------------------------------------------------------------------------------------------

    def feed_truth(self, feed: Feed, *, with_input: bool = False) -> dict[str, Any]:
        doc = self.documents.get(feed.input_document_id)
        body: dict[str, Any] = {
            **feed.as_amazon(),
            "sellerId": feed.seller_id,
            "family": feed.family,
            "stalled": feed.stalled,
            "feedOptions": feed.feed_options,
            "inputContentType": doc.content_type if doc else None,
            "inputBytes": len(doc.content) if doc and doc.content is not None else None,
            "fatalReason": feed.fatal_reason,
            "messages": [r.as_json() for r in feed.results],
        }
        if with_input and doc is not None and doc.content is not None:
            body["input"] = doc.content[:100_000].decode("utf-8", "replace")
        if feed.result_document_id is not None:
            result = self.documents[feed.result_document_id]
            assert result.content is not None
            raw = gzip.decompress(result.content) if result.compression == "GZIP" else result.content
            body["report"] = raw.decode("utf-8", "replace")
        return body


def _schema_error_text(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where or '(document)'}: {error.message}"[:1000]


def _attribute_issues(raw: dict[str, Any]) -> list[Issue]:
    """What the product type's rules find wrong with a schema-valid message's
    ``fulfillment_availability`` (given by UPDATE/PARTIAL_UPDATE attributes, or by a PATCH's add,
    replace or merge of ``/attributes/fulfillment_availability``)."""
    values: list[Any] = []
    if raw["operationType"] == "PATCH":
        for patch in raw.get("patches", []):
            if patch.get("path") == _AVAILABILITY_PATH and patch.get("op") in ("add", "replace", "merge"):
                values.append(patch.get("value"))
    elif raw["operationType"] != "DELETE" and FULFILLMENT_AVAILABILITY in (raw.get("attributes") or {}):
        values.append(raw["attributes"][FULFILLMENT_AVAILABILITY])
    missing = invalid = False
    for value in values:
        for error in _availability_validator().iter_errors(value):
            if error.validator == "required" or (
                error.validator == "minLength"
                and list(error.absolute_path)[-1:] == ["fulfillment_channel_code"]
            ):
                missing = True
            else:
                invalid = True
        entries = value if isinstance(value, list) else []
        codes = [e.get("fulfillment_channel_code") for e in entries if isinstance(e, dict)]
        codes = [c for c in codes if c]
        if len(set(codes)) != len(codes):
            invalid = True  # one entry per fulfillment channel (the selector's maxUniqueItems 1)
    issues: list[Issue] = []
    if missing:
        issues.append(
            Issue(
                CODE_MISSING_VALUE,
                "The field 'fulfillment_channel_code' for the attribute 'fulfillment_availability' does not"
                " have enough values. The required minimum is '1' value(s).",
                attribute_name=FULFILLMENT_AVAILABILITY,
            )
        )
    if invalid:
        issues.append(
            Issue(
                CODE_INVALID_VALUE,
                "The provided value for 'fulfillment_availability' is invalid.",
                attribute_name=FULFILLMENT_AVAILABILITY,
            )
        )
    return issues


_AVAILABILITY_PATH = "/attributes/" + FULFILLMENT_AVAILABILITY


@cache
def _availability_validator() -> Any:
    import jsonschema  # noqa: PLC0415 - loaded only when a listings feed is processed

    return jsonschema.Draft7Validator(FULFILLMENT_AVAILABILITY_SCHEMA)


def _entries(value: Any) -> dict[str, dict[str, Any]]:
    """A validated ``fulfillment_availability`` value by fulfillment channel code."""
    entries = value if isinstance(value, list) else []
    return {str(e["fulfillment_channel_code"]): dict(e) for e in entries if isinstance(e, dict)}


def _patched(current: dict[str, dict[str, Any]], op: str, value: Any) -> dict[str, dict[str, Any]]:
    """``fulfillment_availability`` after one patch: add/replace set the whole attribute; merge
    updates the entries its selectors name and leaves their other fields (restock_date,
    lead_time_to_ship_max_days) and other channels as they were (docs "Merge a listing"); delete
    removes the entries named, or the attribute."""
    if op == "merge":
        merged = {code: dict(entry) for code, entry in current.items()}
        for code, entry in _entries(value).items():
            merged[code] = {**merged.get(code, {}), **entry}
        return merged
    if op == "delete":
        named = _entries(value)
        return {code: entry for code, entry in current.items() if named and code not in named}
    return _entries(value)


def _apply_listing(
    listings: dict[str, Listing], raw: dict[str, Any], feed_id: str, at: float
) -> MessageResult:
    message_id: int = raw["messageId"]
    sku: str = raw["sku"]
    operation = raw["operationType"]
    known = listings.get(sku)
    if operation == "DELETE":
        if known is None:
            return MessageResult(message_id, sku, False, "4000004", f"SKU {sku} has no listing to delete.")
        del listings[sku]
        return MessageResult(message_id, sku, True, detail={"deleted": True})
    availability = dict(known.availability) if known is not None else {}
    found = False
    if operation == "PATCH":
        if known is None:
            return MessageResult(
                message_id, sku, False, "4000004", f"SKU {sku} has no listing to patch; create it first."
            )
        for patch in raw.get("patches", []):
            if patch.get("path") == _AVAILABILITY_PATH:
                found = True
                availability = _patched(availability, str(patch.get("op")), patch.get("value"))
    else:  # UPDATE, PARTIAL_UPDATE
        if operation == "PARTIAL_UPDATE" and known is None:
            return MessageResult(
                message_id, sku, False, "4000004", f"SKU {sku} has no listing to update partially."
            )
        attributes = raw.get("attributes") or {}
        if FULFILLMENT_AVAILABILITY in attributes:
            found, availability = True, _entries(attributes[FULFILLMENT_AVAILABILITY])
    listing = known or Listing(sku, None)
    listing.product_type = raw.get("productType", listing.product_type)
    if found:
        listing.set_availability(availability)
    listing.updated_at = at
    listing.feed_id = feed_id
    listings[sku] = listing
    return MessageResult(message_id, sku, True, detail={"quantity": listing.quantity})


# --- XML parsing ---------------------------------------------------------------------------------------


class EnvelopeError(ValueError):
    """The document is not a well-formed AmazonEnvelope of the expected message type: the feed is FATAL."""


class MessageError(ValueError):
    """One message does not follow its structure."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


def _local(element: etree._Element) -> str:
    tag = element.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _child(element: etree._Element, name: str) -> etree._Element | None:
    for child in _children(element):
        if _local(child) == name:
            return child
    return None


def _text(element: etree._Element, name: str) -> str | None:
    child = _child(element, name)
    if child is None:
        return None
    return (child.text or "").strip()


def parse_envelope(
    content: bytes, message_type: str, seller_id: str
) -> list[tuple[int | None, etree._Element]]:
    """The envelope's messages as (MessageID or None, body element); :class:`EnvelopeError` when the
    envelope itself is wrong (not XML, wrong root, Header, MerchantIdentifier or MessageType)."""
    try:
        root = etree.fromstring(content, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise EnvelopeError(f"XML Parsing Fatal Error: {exc}") from None
    if _local(root) != "AmazonEnvelope":
        raise EnvelopeError(f"The root element must be AmazonEnvelope, not {_local(root)}.")
    header = _child(root, "Header")
    if header is None or not _text(header, "DocumentVersion") or not _text(header, "MerchantIdentifier"):
        raise EnvelopeError("The envelope needs a Header with DocumentVersion and MerchantIdentifier.")
    merchant = _text(header, "MerchantIdentifier")
    if merchant != seller_id:
        raise EnvelopeError(f"MerchantIdentifier {merchant} is not the submitting seller.")
    kind = _text(root, "MessageType")
    if kind != message_type:
        raise EnvelopeError(
            f"MessageType must be {message_type} for this feed type, not {kind or 'missing'}."
        )
    messages = [m for m in _children(root) if _local(m) == "Message"]
    if not messages:
        raise EnvelopeError("The envelope has no Message.")
    parsed: list[tuple[int | None, etree._Element]] = []
    for message in messages:
        raw_id = _text(message, "MessageID") or ""
        message_id = int(raw_id) if raw_id.isdigit() and 0 < int(raw_id) < 2**31 else None
        body = _child(message, message_type)
        parsed.append((message_id, body if body is not None else message))
    return parsed


def _order_id(element: etree._Element) -> str:
    order_id = _text(element, "AmazonOrderID")
    if order_id is None:
        if _text(element, "MerchantOrderID") is not None:
            raise MessageError("MerchantOrderID is not supported here; give the AmazonOrderID.", "")
        raise MessageError("AmazonOrderID (or MerchantOrderID) is required.", "")
    if not order_id:
        raise MessageError("AmazonOrderID is empty.", "")
    return order_id


def parse_fulfillment(message_id: int, element: etree._Element) -> FulfillmentMessage:
    """An OrderFulfillment message (OrderFulfillment.xsd), or :class:`MessageError`."""
    if _local(element) != "OrderFulfillment":
        raise MessageError("The message has no OrderFulfillment element.", "")
    order_id = _order_id(element)
    date_raw = _text(element, "FulfillmentDate")
    if not date_raw:
        raise MessageError("FulfillmentDate is required.", order_id)
    try:
        fulfillment_date = parse_iso(date_raw)
    except ValueError:
        raise MessageError(f"FulfillmentDate {date_raw!r} is not an xsd:dateTime.", order_id) from None
    data = _child(element, "FulfillmentData")
    carrier_code = carrier_name = shipping_method = tracking = None
    if data is not None:
        carrier_code = _text(data, "CarrierCode")
        carrier_name = _text(data, "CarrierName")
        if carrier_code is None and carrier_name is None:
            raise MessageError("FulfillmentData needs CarrierCode or CarrierName.", order_id)
        shipping_method = _text(data, "ShippingMethod")
        tracking = _text(data, "ShipperTrackingNumber")
    items: list[FulfillmentItem] = []
    for item in _children(element):
        if _local(item) != "Item":
            continue
        code = _text(item, "AmazonOrderItemCode")
        if not code:
            if _text(item, "MerchantOrderItemID") is not None:
                raise MessageError(
                    "MerchantOrderItemID is not supported here; give AmazonOrderItemCode.", order_id
                )
            raise MessageError("Item needs AmazonOrderItemCode.", order_id)
        quantity_raw = _text(item, "Quantity")
        quantity: int | None = None
        if quantity_raw is not None:
            if not quantity_raw.isdigit() or int(quantity_raw) < 1:
                raise MessageError(f"Item {code}: Quantity must be a positive integer.", order_id)
            quantity = int(quantity_raw)
        items.append(FulfillmentItem(code, quantity))
    codes = [i.order_item_id for i in items]
    if len(set(codes)) != len(codes):
        raise MessageError("An AmazonOrderItemCode is listed twice.", order_id)
    return FulfillmentMessage(
        message_id,
        order_id,
        fulfillment_date,
        carrier_code,
        carrier_name,
        shipping_method,
        tracking,
        tuple(items),
    )


def parse_acknowledgement(message_id: int, element: etree._Element) -> AcknowledgementMessage:
    """An OrderAcknowledgement message: StatusCode Success (acknowledged) or Failure (seller cancels)."""
    if _local(element) != "OrderAcknowledgement":
        raise MessageError("The message has no OrderAcknowledgement element.", "")
    order_id = _order_id(element)
    status = _text(element, "StatusCode")
    if status not in ("Success", "Failure"):
        raise MessageError("StatusCode must be Success or Failure.", order_id)
    # OrderAcknowledgement.xsd is a sequence: AmazonOrderID, MerchantOrderID?, StatusCode, Item*.
    names = [_local(child) for child in _children(element)]
    expected = ["AmazonOrderID", *(["MerchantOrderID"] if "MerchantOrderID" in names else []), "StatusCode"]
    if names[: len(expected)] != expected or any(name != "Item" for name in names[len(expected) :]):
        raise MessageError(
            "OrderAcknowledgement takes AmazonOrderID, MerchantOrderID (optional), StatusCode, then Item"
            f" elements, in that order; got {', '.join(names)}.",
            order_id,
        )
    merchant_order_id = _text(element, "MerchantOrderID")
    if merchant_order_id == "":
        raise MessageError("MerchantOrderID is empty.", order_id)
    items: list[tuple[str, str | None]] = []
    for item in _children(element):
        if _local(item) != "Item":
            continue
        code = _text(item, "AmazonOrderItemCode")
        if not code:
            raise MessageError("Item needs AmazonOrderItemCode.", order_id)
        items.append((code, _text(item, "CancelReason")))
    return AcknowledgementMessage(
        message_id, order_id, "Success" if status == "Success" else "Failure", tuple(items), merchant_order_id
    )
