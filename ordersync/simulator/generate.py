"""Deterministic generation of catalogues, orders and their timelines from a scenario and its seed.

Each seller draws from its own random stream (seeded with the scenario seed and the seller id), so
adding a seller does not change another seller's orders. Every random draw of an order is made
whether or not it is used later, so the schedule depends only on the scenario and the seed.
"""

from __future__ import annotations

import random
import string
from decimal import Decimal

from ordersync.simulator.orders import (
    EASY_SHIP,
    SHIP_PLUS,
    Address,
    FulfillmentChannel,
    Item,
    Order,
    OrderBook,
    SimStatus,
    Snapshot,
)
from ordersync.simulator.scenario import (
    MARKETPLACES,
    UNMAPPED_SKU_PREFIX,
    Marketplace,
    OrderProfile,
    Product,
    Scenario,
    SellerScenario,
    VisibilityLag,
)

_ADJECTIVES = (
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Essential",
    "Everyday",
    "Premium",
    "Pro",
    "Smart",
    "Travel",
    "Vintage",
    "Ultra",
)
_NOUNS = (
    "Coffee Mug",
    "Desk Lamp",
    "Water Bottle",
    "Backpack",
    "Notebook",
    "Phone Stand",
    "Cutting Board",
    "Yoga Mat",
    "Tea Kettle",
    "Wall Clock",
    "Headphones",
    "Plant Pot",
    "Pillow Case",
    "Spice Rack",
)
_FIRST = ("Alex", "Maria", "John", "Sofia", "Lukas", "Emma", "Noah", "Mia", "Liam", "Anna", "Paul", "Lea")
_LAST = ("Smith", "Garcia", "Miller", "Schmidt", "Martin", "Rossi", "Brown", "Weber", "Dubois", "Novak")
_STREETS = ("Main St", "Oak Avenue", "Bahnhofstrasse", "High Street", "Rue de la Paix", "Market Road")
#: (city, state or region, postal code) per country; other countries get a generic address.
_CITIES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "US": (
        ("Seattle", "WA", "98101"),
        ("Austin", "TX", "78701"),
        ("Denver", "CO", "80202"),
        ("Boston", "MA", "02108"),
        ("Chicago", "IL", "60601"),
    ),
    "DE": (
        ("Berlin", "Berlin", "10115"),
        ("München", "Bayern", "80331"),
        ("Hamburg", "Hamburg", "20095"),
        ("Köln", "Nordrhein-Westfalen", "50667"),
    ),
    "GB": (("London", "Greater London", "SW1A 1AA"), ("Leeds", "West Yorkshire", "LS1 1UR")),
    "FR": (("Paris", "Île-de-France", "75001"), ("Lyon", "Auvergne-Rhône-Alpes", "69001")),
}
_ALPHANUMERIC = string.ascii_uppercase + string.digits
_ORDER_ID_PREFIXES = {"na": (111, 112, 113, 114), "eu": (302, 303, 304, 305, 306), "fe": (249, 250, 503)}


def seller_rng(scenario: Scenario, seller_id: str, stream: str = "orders") -> random.Random:
    return random.Random(f"{scenario.seed}/{seller_id}/{stream}")


def ean13(rng: random.Random) -> str:
    body = "".join(rng.choices(string.digits, k=12))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def asin(rng: random.Random) -> str:
    return "B0" + "".join(rng.choices(_ALPHANUMERIC, k=8))


def price(rng: random.Random, marketplace: Marketplace | None = None) -> Decimal:
    whole = rng.randint(4, 119)
    if marketplace is not None and marketplace.decimals == 0:
        return Decimal(whole * 100)
    return Decimal(whole) + rng.choice((Decimal("0.49"), Decimal("0.90"), Decimal("0.99")))


def catalogue(scenario: Scenario, seller: SellerScenario) -> tuple[Product, ...]:
    """The seller's catalogue as declared, or ``catalogue_size`` generated products."""
    if seller.catalogue:
        return seller.catalogue
    rng = seller_rng(scenario, seller.seller_id, "catalogue")
    first = MARKETPLACES[seller.marketplaces[0]]
    return tuple(
        Product(
            sku=f"SKU-{n:05d}",
            asin=asin(rng),
            ean=ean13(rng),
            title=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} #{n}",
            price=price(rng, first),
        )
        for n in range(1, seller.catalogue_size + 1)
    )


def draw_lag(rng: random.Random, lag: VisibilityLag) -> float:
    late = rng.random() < lag.p_late
    size = lag.max_late_s * (1.0 - rng.random())  # in (0, max_late_s]
    return size if late and lag.max_late_s > 0 else 0.0


def order_id(rng: random.Random, region: str, taken: set[str]) -> str:
    while True:
        prefix = rng.choice(_ORDER_ID_PREFIXES[region])
        candidate = f"{prefix:03d}-{rng.randrange(10**7):07d}-{rng.randrange(10**7):07d}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def order_item_id(rng: random.Random) -> str:
    return str(rng.randrange(10**13, 10**14))


def address(rng: random.Random, country: str) -> Address:
    city, state, postal = rng.choice(_CITIES.get(country, (("Capital City", "", "10001"),)))
    return Address(
        name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        line1=f"{rng.randint(1, 999)} {rng.choice(_STREETS)}",
        city=city,
        state_or_region=state,
        postal_code=postal,
        country_code=country,
        phone=f"+{rng.randint(1, 49)} {rng.randint(100, 999)} {rng.randint(1000000, 9999999)}",
    )


def unmapped_item(rng: random.Random, marketplace: Marketplace, quantity: int) -> Item:
    code = "".join(rng.choices(_ALPHANUMERIC, k=6))
    return Item(
        order_item_id=order_item_id(rng),
        sku=f"{UNMAPPED_SKU_PREFIX}{code}",
        asin=asin(rng),
        title=f"Item not in the seller's catalogue {code}",
        quantity=quantity,
        unit_price=price(rng, marketplace),
    )


def catalogue_item(rng: random.Random, product: Product, marketplace: Marketplace, quantity: int) -> Item:
    unit = product.price if marketplace.decimals else product.price.quantize(Decimal(1))
    return Item(
        order_item_id=order_item_id(rng),
        sku=product.sku,
        asin=product.asin,
        title=product.title,
        quantity=quantity,
        unit_price=unit,
    )


def ship_level(marketplace: Marketplace, expedited: bool) -> str:
    kind = "Exp" if expedited else "Std"
    return f"{kind} {marketplace.country_code} D2D Dom"


def populate(book: OrderBook, scenario: Scenario, start: int, taken_ids: set[str]) -> None:
    """Schedule every seller's orders of the scenario, relative to simulated ``start``."""
    for seller in scenario.sellers:
        _populate_seller(book, scenario, seller, start, taken_ids)


def drawn_programmes(draw: float, profile: OrderProfile, channel: FulfillmentChannel) -> tuple[str, ...]:
    """The seller-fulfilled programmes of an order, from one uniform draw: Ship+, Easy Ship or none."""
    if channel != "MFN":
        return ()
    if draw < profile.ship_plus_share:
        return (SHIP_PLUS,)
    if draw < profile.ship_plus_share + profile.easy_ship_share:
        return (EASY_SHIP,)
    return ()


def _populate_seller(
    book: OrderBook, scenario: Scenario, seller: SellerScenario, start: int, taken_ids: set[str]
) -> None:
    profile = seller.orders
    rng = seller_rng(scenario, seller.seller_id)
    # Draws added after the first release come from their own stream, so older scenarios keep their orders.
    extra = random.Random(f"{scenario.seed}/{seller.seller_id}/order-life")
    # Programmes draw from their own stream, so adding them changes no other order's draws.
    programmes = random.Random(f"{scenario.seed}/{seller.seller_id}/programmes")
    handling = random.Random(f"{scenario.seed}/{seller.seller_id}/handling")
    products = catalogue(scenario, seller)
    first = start - profile.history_s
    span = profile.history_s + profile.arrival_window_s
    arrivals = sorted(int(first + rng.random() * span) for _ in range(profile.count))
    for created in arrivals:
        marketplace = MARKETPLACES[rng.choice(seller.marketplaces)]
        n_items = min(rng.randint(*profile.items_per_order), len(products))
        chosen = rng.sample(products, n_items)
        items = [catalogue_item(rng, p, marketplace, rng.randint(*profile.quantity)) for p in chosen]
        unmapped = rng.random() < profile.unknown_sku_share
        replacement = unmapped_item(rng, marketplace, rng.randint(*profile.quantity))
        if unmapped:
            items[rng.randrange(len(items))] = replacement
        channel: FulfillmentChannel = "AFN" if rng.random() < profile.afn_share else "MFN"
        pending = rng.random() < profile.pending_share
        authorise_at = created + max(1, int(rng.uniform(*profile.pending_duration_s)))
        canceled = rng.random() < profile.cancel_share
        cancel_at = created + max(1, int(rng.uniform(*profile.cancel_after_s)))
        ship_from = authorise_at if pending else created
        afn_ship_at = ship_from + max(1, int(rng.uniform(*profile.afn_ship_delay_s)))
        missing_address = rng.random() < profile.missing_address_share
        expedited = rng.random() < profile.expedited_share
        buyer = address(rng, marketplace.country_code)
        email_user = "".join(rng.choices(string.ascii_lowercase + string.digits, k=14))
        lags = [draw_lag(rng, scenario.visibility_lag) for _ in range(4)]
        preorder = extra.random() < profile.preorder_share
        release_at = created + max(1, int(extra.uniform(*profile.preorder_release_s)))
        order = Order(
            order_id=order_id(rng, seller.region, taken_ids),
            seller_id=seller.seller_id,
            marketplace=marketplace,
            channel=channel,
            created=created,
            items=tuple(items),
            address=None if missing_address else buyer,
            buyer_name=buyer.name,
            buyer_email=f"{email_user}@marketplace.amazon.com",
            ship_service_level=ship_level(marketplace, expedited),
            ship_category="Expedited" if expedited else "Standard",
            programs=drawn_programmes(programmes.random(), profile, channel),
            latest_ship_at=(release_at if preorder else created)
            + int(handling.uniform(*profile.ship_within_s)),
        )
        status: SimStatus = "PendingAvailability" if preorder else "Pending" if pending else "Unshipped"
        if preorder:
            order.preorder = True
            pending = True
            authorise_at = max(authorise_at, release_at + 1)
            afn_ship_at = authorise_at + max(1, afn_ship_at - ship_from)
            canceled = False
        initial = Snapshot(status=status, shipped=(0,) * len(items))
        book.schedule_creation(order, initial, lags[0])
        if preorder:
            book.schedule(release_at, order.order_id, "release", lags[1])
        if pending:
            book.schedule(authorise_at, order.order_id, "authorise", lags[1])
        if canceled:
            book.schedule(cancel_at, order.order_id, "cancel", lags[2])
        if channel == "AFN":
            book.schedule(afn_ship_at, order.order_id, "afn_ship", lags[3])
