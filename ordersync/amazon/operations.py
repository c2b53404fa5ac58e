"""The SP-API's operations by API, and the outcome of one call: the vocabulary the client reports in and
the health board counts by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ApiName = Literal["orders", "feeds", "listings"]


CallOutcome = Literal["ok", "throttled", "error", "auth", "unavailable"]


API_NAMES: tuple[ApiName, ...] = get_args(ApiName)


#: The SP-API's own name of each API, for sentences.
API_TITLES: dict[ApiName, str] = {"orders": "Orders API", "feeds": "Feeds API", "listings": "Listings feeds"}


#: Feed types that update listings (inventory) rather than orders (fulfilment, acknowledgement).
LISTINGS_FEED_TYPES = frozenset({"JSON_LISTINGS_FEED", "POST_INVENTORY_AVAILABILITY_DATA"})


#: Operations of the Feeds API; which of the two feed APIs they count for depends on the feed.
FEED_OPERATIONS = frozenset(
    {
        "createFeed",
        "getFeed",
        "getFeeds",
        "cancelFeed",
        "createFeedDocument",
        "getFeedDocument",
        "uploadFeedDocument",
        "downloadFeedDocument",
    }
)


#: Operations that write order status back but are not feeds.
FEEDS_API_OPERATIONS = frozenset({"confirmShipment", "updateShipmentStatus"})


#: Easy Ship API 2022-03-23 (each 1 request per second, burst 5): scheduling a package ships an Easy Ship
#: order, so they count for the write-back (``feeds``) on the health board.
EASYSHIP_OPERATIONS = frozenset(
    {
        "listHandoverSlots",
        "createScheduledPackage",
        "createScheduledPackageBulk",
        "getScheduledPackage",
        "updateScheduledPackages",
    }
)


#: Catalog Items API 2022-04-01 (2 per second, burst 2): product data, counted with the listings.
CATALOG_OPERATIONS = frozenset({"getCatalogItem", "searchCatalogItems"})


#: Listings Items API operations.
LISTINGS_OPERATIONS = frozenset(
    {"getListingsItem", "putListingsItem", "patchListingsItem", "searchListingsItems"}
)


#: Notifications API v1 operations ordersync calls (notifications.json: each 1 request per second,
#: burst 5; the rate limiter reads the plans from the model).
NOTIFICATIONS_OPERATIONS = frozenset(
    {
        "createDestination",
        "getDestinations",
        "getDestination",
        "deleteDestination",
        "createSubscription",
        "getSubscription",
        "getSubscriptionById",
        "deleteSubscriptionById",
    }
)


#: Reports API 2021-06-30 operations ordersync calls (reports_2021-06-30.json: createReport and
#: getReportDocument 0.0167 per second, burst 15; getReport 2, burst 15; getReports and cancelReport
#: 0.0222, burst 10), and the download of a report document from its presigned URL (S3: no usage plan).
#: They count for the Orders API on the health board: ordersync reads only the order report.
REPORTS_OPERATIONS = frozenset(
    {"createReport", "getReports", "getReport", "cancelReport", "getReportDocument", "downloadReportDocument"}
)


#: Grantless operations: sent with an LWA access token of the client_credentials grant (the application's,
#: for no seller) instead of a seller's refresh-token one.
GRANTLESS_OPERATIONS = NOTIFICATIONS_OPERATIONS - {"createSubscription", "getSubscription"}


#: Notification types whose subscriptions take an event filter (notifications.json
#: EventFilter.eventFilterType); ORDER_CHANGE needs one.
EVENT_FILTER_TYPES = frozenset({"ANY_OFFER_CHANGED", "ORDER_CHANGE", "SHIPMENT_TRACKING_MILESTONE_CHANGED"})


#: The LWA scope the Notifications API's grantless operations need.
NOTIFICATIONS_SCOPE = "sellingpartnerapi::notifications"


#: The seller the rate limiter keys grantless calls by: Amazon limits them per application (there is no
#: selling partner), so every channel of the application shares their buckets.
GRANTLESS_BUCKET = "grantless"


def api_for_operation(operation: str, feed_type: str | None = None) -> ApiName:
    """The API an SP-API operation belongs to on the health board.

    Orders (getOrders, searchOrders, getOrder, getOrderItems, getOrderAddress, Restricted Data Tokens)
    count for ``orders``, and so do the Notifications API's (ORDER_CHANGE is how orders arrive) and the
    Reports API's (:data:`REPORTS_OPERATIONS`: the order report reconciles orders); feeds
    and confirmShipment for ``feeds`` (the write-back), unless the feed is a listings feed
    (JSON_LISTINGS_FEED), which counts for ``listings``; Easy Ship's for ``feeds``, Catalog Items' for
    ``listings``.
    """
    if feed_type is not None and feed_type in LISTINGS_FEED_TYPES:
        return "listings"
    if operation in FEED_OPERATIONS or operation in FEEDS_API_OPERATIONS or operation in EASYSHIP_OPERATIONS:
        return "feeds"
    if operation in LISTINGS_OPERATIONS or operation in CATALOG_OPERATIONS:
        return "listings"
    return "orders"


@dataclass(frozen=True)
class ApiCall:
    """The outcome of one SP-API request, for the health board. ``detail`` names the failure
    ("500 InternalFailure", "LWA refused the credentials: invalid_grant"); never a secret."""

    operation: str
    api: ApiName
    outcome: CallOutcome
    status: int | None = None
    detail: str | None = None
    #: Seconds the request waited for its quota before it was sent (0: sent at once, or never sent).
    waited_s: float = 0.0
