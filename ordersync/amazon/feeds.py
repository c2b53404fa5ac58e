"""The Feeds API 2021-06-30 client: documents, feeds, processing reports, and the two feed bodies
ordersync sends (order fulfillment XML and JSON_LISTINGS_FEED quantity patches).

Every SP-API call goes through :meth:`SpApiClient.call` (rate limiter, classification). The
presigned document URLs are S3, not SP-API: no access token, no usage plan, S3's XML errors; they
are classified the same way (5xx and transport errors retryable, 4xx permanent).

Submitting a feed::

    feeds = FeedsClient(client)
    feed_id = await feeds.submit("POST_ORDER_FULFILLMENT_DATA", content, XML_CONTENT_TYPE)
    feed = await feeds.get_feed(feed_id)           # poll until feed.done
    report = parse_processing_report(await feeds.get_feed_document(feed.result_feed_document_id))
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from ordersync.amazon.client import SpApiClient, amazon_time
from ordersync.amazon.operations import ApiName
from ordersync.errors import AmazonRejected, AmazonUnavailable
from ordersync.settings import EasyShipDocumentType

XML_CONTENT_TYPE = "text/xml; charset=UTF-8"
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
ProcessingStatus = Literal["IN_QUEUE", "IN_PROGRESS", "DONE", "FATAL", "CANCELLED"]
FINAL_STATUSES: frozenset[str] = frozenset({"DONE", "FATAL", "CANCELLED"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class Feed(_Model):
    feed_id: str = Field(alias="feedId")
    feed_type: str = Field(alias="feedType")
    marketplace_ids: tuple[str, ...] = Field((), alias="marketplaceIds")
    created_time: datetime = Field(alias="createdTime")
    processing_status: ProcessingStatus = Field(alias="processingStatus")
    processing_start_time: datetime | None = Field(None, alias="processingStartTime")
    processing_end_time: datetime | None = Field(None, alias="processingEndTime")
    result_feed_document_id: str | None = Field(None, alias="resultFeedDocumentId")

    @property
    def done(self) -> bool:
        """Processing ended (DONE, FATAL or CANCELLED)."""
        return self.processing_status in FINAL_STATUSES


class FeedsPage(_Model):
    feeds: tuple[Feed, ...]
    next_token: str | None = None


class FeedDocumentUpload(_Model):
    feed_document_id: str = Field(alias="feedDocumentId")
    url: str


class FeedDocument(_Model):
    feed_document_id: str = Field(alias="feedDocumentId")
    url: str
    compression_algorithm: Literal["GZIP"] | None = Field(None, alias="compressionAlgorithm")


@dataclass(frozen=True)
class ProcessingResult:
    """One problem a processing report names (XML ``Result`` or JSON listings ``issue``)."""

    message_id: int | None
    severity: Literal["Error", "Warning"]
    code: str
    description: str
    amazon_order_id: str | None = None
    sku: str | None = None


def results_text(results: list[ProcessingResult]) -> str | None:
    """One message's problems as kept in an outcome: ``code: description; description``; None: none."""
    if not results:
        return None
    return f"{results[0].code}: {'; '.join(r.description for r in results)}"


@dataclass(frozen=True)
class ProcessingReport:
    processed: int
    successful: int
    with_error: int
    with_warning: int
    results: tuple[ProcessingResult, ...]
    status_code: str = "Complete"

    def errors_by_message(self) -> dict[int | None, list[ProcessingResult]]:
        found: dict[int | None, list[ProcessingResult]] = {}
        for result in self.results:
            if result.severity == "Error":
                found.setdefault(result.message_id, []).append(result)
        return found


def _s3_error(operation: str, response: httpx.Response) -> tuple[str, str]:
    try:
        root = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return f"S3Http{response.status_code}", response.text[:200]
    return root.findtext("Code") or f"S3Http{response.status_code}", root.findtext("Message") or ""


class FeedsClient:
    """One channel's Feeds API, on its :class:`SpApiClient`.

    ``api``: which API the feed calls count for on the health board ("listings" for listings feeds);
    default: the client's choice (its ``feeds_api``, or the feed type's where it is known)."""

    def __init__(self, client: SpApiClient, *, api: ApiName | None = None) -> None:
        self.client = client
        self.api = api

    async def create_feed_document(self, content_type: str) -> FeedDocumentUpload:
        response = await self.client.call(
            "createFeedDocument",
            "POST",
            "/feeds/2021-06-30/documents",
            json_body={"contentType": content_type},
            api=self.api,
        )
        return FeedDocumentUpload.model_validate(_body(response, "createFeedDocument"))

    async def upload(self, url: str, content: bytes, content_type: str) -> None:
        """PUT the content on the presigned URL, with the content type given to createFeedDocument."""
        operation = "uploadFeedDocument"
        try:
            response = await self.client.http.put(
                url,
                content=content,
                headers={"content-type": content_type, "user-agent": self.client.user_agent},
            )
        except httpx.HTTPError as exc:
            raise AmazonUnavailable(operation, None, type(exc).__name__, str(exc) or "no answer") from exc
        if response.status_code < 300:
            return
        code, message = _s3_error(operation, response)
        request_id = response.headers.get("x-amz-request-id")
        if response.status_code >= 500 or response.status_code == 429:
            raise AmazonUnavailable(operation, response.status_code, code, message, request_id)
        raise AmazonRejected(operation, response.status_code, code, message, request_id)

    async def create_feed(
        self,
        feed_type: str,
        input_feed_document_id: str,
        marketplace_ids: Iterable[str] | None = None,
        feed_options: Mapping[str, str] | None = None,
        *,
        lane: str = "default",
    ) -> str:
        """createFeed; returns the feed id. The limiter takes a token of createFeed (on ``lane``) and, for
        a JSON_LISTINGS_FEED, of that feed type's own limit (5 per 5 minutes) too."""
        body: dict[str, Any] = {
            "feedType": feed_type,
            "marketplaceIds": list(marketplace_ids or self.client.channel.marketplaces),
            "inputFeedDocumentId": input_feed_document_id,
        }
        if feed_options:
            body["feedOptions"] = dict(feed_options)
        response = await self.client.call(
            "createFeed",
            "POST",
            "/feeds/2021-06-30/feeds",
            json_body=body,
            feed_type=feed_type,
            lane=lane,
            api=self.api,
        )
        feed_id = _body(response, "createFeed").get("feedId")
        if not isinstance(feed_id, str) or not feed_id:
            raise AmazonRejected("createFeed", response.status_code, "UnexpectedResponse", "no feedId")
        return feed_id

    async def submit(
        self,
        feed_type: str,
        content: bytes,
        content_type: str,
        marketplace_ids: Iterable[str] | None = None,
        feed_options: Mapping[str, str] | None = None,
        *,
        lane: str = "default",
    ) -> str:
        """createFeedDocument, upload, createFeed (on ``lane``); returns the feed id."""
        document = await self.create_feed_document(content_type)
        await self.upload(document.url, content, content_type)
        return await self.create_feed(
            feed_type, document.feed_document_id, marketplace_ids, feed_options, lane=lane
        )

    async def get_feed(self, feed_id: str) -> Feed:
        response = await self.client.call(
            "getFeed", "GET", f"/feeds/2021-06-30/feeds/{feed_id}", api=self.api
        )
        feed = Feed.model_validate(_body(response, "getFeed"))
        if feed.processing_status == "FATAL":
            # Amazon rejected the whole feed: operators hear of it once (the notification is per feed).
            await self.client.feed_fatal(feed.feed_id, feed.feed_type, api=self.api)
        return feed

    async def get_feeds_page(
        self,
        feed_types: Iterable[str] = (),
        *,
        processing_statuses: Iterable[str] = (),
        marketplace_ids: Iterable[str] = (),
        created_since: datetime | None = None,
        created_until: datetime | None = None,
        page_size: int = 10,
        next_token: str | None = None,
    ) -> FeedsPage:
        """One page of getFeeds: the filters, or ``next_token`` alone (Amazon refuses both)."""
        params: dict[str, str]
        if next_token:
            params = {"nextToken": next_token}
        else:
            params = {"feedTypes": ",".join(feed_types), "pageSize": str(page_size)}
            if processing_statuses:
                params["processingStatuses"] = ",".join(processing_statuses)
            if marketplace_ids:
                params["marketplaceIds"] = ",".join(marketplace_ids)
            if created_since is not None:
                params["createdSince"] = amazon_time(created_since)
            if created_until is not None:
                params["createdUntil"] = amazon_time(created_until)
        response = await self.client.call(
            "getFeeds", "GET", "/feeds/2021-06-30/feeds", params=params, api=self.api
        )
        body = _body(response, "getFeeds")
        return FeedsPage(
            feeds=tuple(Feed.model_validate(raw) for raw in body.get("feeds") or []),
            next_token=body.get("nextToken") or None,
        )

    async def iter_feeds(
        self, feed_types: Iterable[str], *, processing_statuses: Iterable[str] = (), page_size: int = 100
    ) -> AsyncIterator[Feed]:
        """Every feed of these types, page by page (each page asks the rate limiter first)."""
        page = await self.get_feeds_page(
            tuple(feed_types), processing_statuses=tuple(processing_statuses), page_size=page_size
        )
        while True:
            for feed in page.feeds:
                yield feed
            if not page.next_token:
                return
            page = await self.get_feeds_page(next_token=page.next_token)

    async def cancel_feed(self, feed_id: str) -> None:
        """cancelFeed: only an IN_QUEUE feed can be cancelled (Amazon's 400 otherwise, permanent)."""
        await self.client.call("cancelFeed", "DELETE", f"/feeds/2021-06-30/feeds/{feed_id}", api=self.api)

    async def get_feed_document_info(
        self, feed_document_id: str, *, content_encoding_header: bool = False
    ) -> FeedDocument:
        """getFeedDocument. ``content_encoding_header``: ask for a URL whose download of a GZIP
        document carries ``Content-Encoding: gzip`` (``enableContentEncodingUrlHeader``), so the
        HTTP client decompresses it; :meth:`download` reads either kind."""
        params = {"enableContentEncodingUrlHeader": "true"} if content_encoding_header else None
        response = await self.client.call(
            "getFeedDocument",
            "GET",
            f"/feeds/2021-06-30/documents/{feed_document_id}",
            params=params,
            api=self.api,
        )
        return FeedDocument.model_validate(_body(response, "getFeedDocument"))

    async def download(self, document: FeedDocument) -> bytes:
        """The document's content from its presigned URL, decompressed when it is GZIP: by the HTTP
        client when the download says ``Content-Encoding: gzip`` (a URL asked for with
        ``enableContentEncodingUrlHeader``), else here."""
        operation = "downloadFeedDocument"
        try:
            response = await self.client.http.get(
                document.url, headers={"user-agent": self.client.user_agent}
            )
        except httpx.HTTPError as exc:
            raise AmazonUnavailable(operation, None, type(exc).__name__, str(exc) or "no answer") from exc
        if response.status_code >= 300:
            code, message = _s3_error(operation, response)
            error = AmazonUnavailable if response.status_code >= 500 else AmazonRejected
            raise error(
                operation, response.status_code, code, message, response.headers.get("x-amz-request-id")
            )
        content = response.content
        decoded = "gzip" in response.headers.get("content-encoding", "").lower()  # httpx gunzipped it
        if document.compression_algorithm == "GZIP" and not decoded:
            try:
                content = gzip.decompress(content)
            except (OSError, EOFError, zlib.error) as exc:
                raise AmazonRejected(operation, response.status_code, "BadGzip", str(exc)) from exc
        return content

    async def get_feed_document(
        self, feed_document_id: str, *, content_encoding_header: bool = False
    ) -> bytes:
        """getFeedDocument and the download: the (result) document's content, gunzipped if need be
        (``content_encoding_header``: see :meth:`get_feed_document_info`)."""
        info = await self.get_feed_document_info(
            feed_document_id, content_encoding_header=content_encoding_header
        )
        return await self.download(info)


def _body(response: httpx.Response, operation: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AmazonRejected(
            operation, response.status_code, "UnexpectedResponse", "the body is not a JSON object"
        )
    return body


# --- processing reports ------------------------------------------------------------------------------


def parse_processing_report(content: bytes) -> ProcessingReport:
    """A result document: the XML ProcessingReport of XML feeds, or the JSON listings report."""
    stripped = content.lstrip()
    if stripped.startswith(b"{"):
        return parse_listings_report(content)
    return parse_xml_processing_report(content)


def _int(text: str | None) -> int:
    try:
        return int((text or "0").strip())
    except ValueError:
        return 0


def parse_xml_processing_report(content: bytes) -> ProcessingReport:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not an XML processing report: {exc}") from exc
    report = root.find(".//ProcessingReport")
    if report is None:
        raise ValueError("no ProcessingReport in the document")
    summary = report.find("ProcessingSummary")

    def count(name: str) -> int:
        return _int(summary.findtext(name)) if summary is not None else 0

    results: list[ProcessingResult] = []
    for node in report.findall("Result"):
        raw_id = (node.findtext("MessageID") or "").strip()
        results.append(
            ProcessingResult(
                message_id=int(raw_id) if raw_id.isdigit() and int(raw_id) > 0 else None,
                severity="Warning" if (node.findtext("ResultCode") or "").strip() == "Warning" else "Error",
                code=(node.findtext("ResultMessageCode") or "").strip(),
                description=(node.findtext("ResultDescription") or "").strip(),
                amazon_order_id=(node.findtext("AdditionalInfo/AmazonOrderID") or "").strip() or None,
                sku=(node.findtext("AdditionalInfo/SKU") or "").strip() or None,
            )
        )
    return ProcessingReport(
        processed=count("MessagesProcessed"),
        successful=count("MessagesSuccessful"),
        with_error=count("MessagesWithError"),
        with_warning=count("MessagesWithWarning"),
        results=tuple(results),
        status_code=(report.findtext("StatusCode") or "").strip(),
    )


def parse_listings_report(content: bytes) -> ProcessingReport:
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise ValueError(f"not a JSON listings report: {exc}") from exc
    summary = body.get("summary") or {}
    results = tuple(
        ProcessingResult(
            message_id=issue.get("messageId"),
            severity="Warning" if issue.get("severity") == "WARNING" else "Error",
            code=str(issue.get("code", "")),
            description=str(issue.get("message", "")),
            sku=issue.get("sku"),
        )
        for issue in body.get("issues") or []
        if isinstance(issue, dict) and issue.get("severity") in ("ERROR", "WARNING")
    )
    processed = int(summary.get("messagesProcessed", 0))
    return ProcessingReport(
        processed=processed,
        successful=int(summary.get("messagesAccepted", 0)),
        with_error=int(summary.get("messagesInvalid", 0)),
        with_warning=int(summary.get("warnings", 0)),
        results=results,
    )


# --- feed bodies ------------------------------------------------------------------------------------------


def _envelope(seller_id: str, message_type: str) -> etree._Element:
    """An XML feed's AmazonEnvelope (amzn-envelope.xsd): its header and message type, no message yet."""
    root = etree.Element("AmazonEnvelope", nsmap={"xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    root.set("{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation", "amzn-envelope.xsd")
    header = etree.SubElement(root, "Header")
    etree.SubElement(header, "DocumentVersion").text = "1.01"
    etree.SubElement(header, "MerchantIdentifier").text = seller_id
    etree.SubElement(root, "MessageType").text = message_type
    return root


def _message(root: etree._Element, message_id: int, message_type: str) -> etree._Element:
    """A new Message of the envelope, numbered ``message_id``: its body element, to fill."""
    node = etree.SubElement(root, "Message")
    etree.SubElement(node, "MessageID").text = str(message_id)
    return etree.SubElement(node, message_type)


@dataclass(frozen=True)
class FulfillmentMessage:
    """One OrderFulfillment message: a shipment of some (or all, with no items) units of an order."""

    message_id: int
    amazon_order_id: str
    fulfillment_date: datetime
    carrier_code: str | None = None
    carrier_name: str | None = None
    shipping_method: str | None = None
    tracking_number: str | None = None
    #: (AmazonOrderItemCode, quantity); empty: every unit not yet shipped.
    items: tuple[tuple[str, int], ...] = ()


def order_fulfillment_feed(seller_id: str, messages: Iterable[FulfillmentMessage]) -> bytes:
    """A POST_ORDER_FULFILLMENT_DATA document (amzn-envelope.xsd, OrderFulfillment.xsd)."""
    root = _envelope(seller_id, "OrderFulfillment")
    for message in messages:
        body = _message(root, message.message_id, "OrderFulfillment")
        etree.SubElement(body, "AmazonOrderID").text = message.amazon_order_id
        etree.SubElement(body, "FulfillmentDate").text = amazon_time(message.fulfillment_date)
        data = etree.SubElement(body, "FulfillmentData")
        if message.carrier_code:
            etree.SubElement(data, "CarrierCode").text = message.carrier_code
        else:
            etree.SubElement(data, "CarrierName").text = message.carrier_name or "Other"
        if message.shipping_method:
            etree.SubElement(data, "ShippingMethod").text = message.shipping_method
        if message.tracking_number:
            etree.SubElement(data, "ShipperTrackingNumber").text = message.tracking_number
        for item_code, quantity in message.items:
            item = etree.SubElement(body, "Item")
            etree.SubElement(item, "AmazonOrderItemCode").text = item_code
            etree.SubElement(item, "Quantity").text = str(quantity)
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


@dataclass(frozen=True)
class AcknowledgementMessage:
    """One OrderAcknowledgement message: StatusCode Success acknowledges the order (with the seller's own
    order number, ``merchant_order_id``, which Amazon keeps: SellerOrderId on getOrder); Failure is the
    seller's cancellation, never sent after a unit shipped."""

    message_id: int
    amazon_order_id: str
    status_code: Literal["Success", "Failure"]
    #: (AmazonOrderItemCode, CancelReason or None); empty: the whole order.
    items: tuple[tuple[str, str | None], ...] = ()
    #: MerchantOrderID: the seller's order number (the sales-order code); None: not given.
    merchant_order_id: str | None = None


def order_acknowledgement_feed(seller_id: str, messages: Iterable[AcknowledgementMessage]) -> bytes:
    """A POST_ORDER_ACKNOWLEDGEMENT_DATA document (amzn-envelope.xsd, OrderAcknowledgement.xsd)."""
    root = _envelope(seller_id, "OrderAcknowledgement")
    for message in messages:
        body = _message(root, message.message_id, "OrderAcknowledgement")
        etree.SubElement(body, "AmazonOrderID").text = message.amazon_order_id
        if message.merchant_order_id:
            # OrderAcknowledgement.xsd: a sequence, MerchantOrderID right after AmazonOrderID.
            etree.SubElement(body, "MerchantOrderID").text = message.merchant_order_id
        etree.SubElement(body, "StatusCode").text = message.status_code
        for item_code, reason in message.items:
            item = etree.SubElement(body, "Item")
            etree.SubElement(item, "AmazonOrderItemCode").text = item_code
            if reason:
                etree.SubElement(item, "CancelReason").text = reason
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


#: Easy Ship's documents (shipping label, tax invoice, warranty) of scheduled packages, as PDFs.
EASYSHIP_DOCUMENTS_FEED = "POST_EASYSHIP_DOCUMENTS"


@dataclass(frozen=True)
class EasyShipDocumentsMessage:
    """One EasyShipDocument message: the documents wanted for an order's scheduled package."""

    message_id: int
    amazon_order_id: str
    document_types: tuple[EasyShipDocumentType, ...] = ("ShippingLabel", "Invoice")


def easyship_documents_feed(seller_id: str, messages: Iterable[EasyShipDocumentsMessage]) -> bytes:
    """A POST_EASYSHIP_DOCUMENTS document (amzn-envelope.xsd, EasyShipDocument messages: AmazonOrderID,
    then one DocumentType per document)."""
    root = _envelope(seller_id, "EasyShipDocument")
    for message in messages:
        body = _message(root, message.message_id, "EasyShipDocument")
        etree.SubElement(body, "AmazonOrderID").text = message.amazon_order_id
        for document_type in message.document_types:
            etree.SubElement(body, "DocumentType").text = document_type
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


@dataclass(frozen=True)
class EasyShipDocumentReference:
    """Where an order's Easy Ship documents can be downloaded: the processing report's ReportReferenceId."""

    message_id: int | None
    amazon_order_id: str | None
    report_reference_id: str


def easyship_document_references(content: bytes) -> tuple[EasyShipDocumentReference, ...]:
    """Each ReportReferenceId of a POST_EASYSHIP_DOCUMENTS processing report, with the MessageID and
    AmazonOrderID beside it. Amazon names the element but does not document where it sits in the report,
    so it is read wherever it appears, its siblings naming the message and the order."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not an XML processing report: {exc}") from exc
    found: list[EasyShipDocumentReference] = []
    for node in root.iter("{*}ReportReferenceId", "ReportReferenceId"):
        reference = (node.text or "").strip()
        parent = node.getparent()
        if not reference or parent is None:
            continue
        raw_id = (parent.findtext("{*}MessageID") or parent.findtext("MessageID") or "").strip()
        order = (parent.findtext("{*}AmazonOrderID") or parent.findtext("AmazonOrderID") or "").strip()
        found.append(
            EasyShipDocumentReference(
                message_id=int(raw_id) if raw_id.isdigit() else None,
                amazon_order_id=order or None,
                report_reference_id=reference,
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class Availability:
    """A seller-fulfilled SKU's stock as Amazon is told it: the quantity, and the handling time and
    restock date when the back-office gives them (None: Amazon keeps its own)."""

    quantity: int
    lead_time_to_ship_max_days: int | None = None
    restock_date: str | None = None

    def patch(self) -> dict[str, Any]:
        """The ``merge`` of ``fulfillment_availability``: only the fields given change (a ``replace``
        would drop the handling time and restock date Amazon holds; "Merge a listing", 2025-06-16)."""
        entry: dict[str, Any] = {"fulfillment_channel_code": "DEFAULT", "quantity": self.quantity}
        if self.lead_time_to_ship_max_days is not None:
            entry["lead_time_to_ship_max_days"] = self.lead_time_to_ship_max_days
        if self.restock_date is not None:
            entry["restock_date"] = self.restock_date
        return {"op": "merge", "path": "/attributes/fulfillment_availability", "value": [entry]}


def listings_quantity_feed(
    seller_id: str, offers: Iterable[tuple[int, str, Availability]], product_type: str = "PRODUCT"
) -> bytes:
    """A JSON_LISTINGS_FEED of PATCH messages merging ``fulfillment_availability``: ``offers`` holds
    (messageId, SKU, availability)."""
    messages = [
        {
            "messageId": message_id,
            "sku": sku,
            "operationType": "PATCH",
            "productType": product_type,
            "patches": [availability.patch()],
        }
        for message_id, sku, availability in offers
    ]
    return json.dumps({"header": {"sellerId": seller_id, "version": "2.0"}, "messages": messages}).encode()
