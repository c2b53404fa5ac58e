"""The failed-order workflow end to end: orders with unknown SKUs fail with the reason; once the listings
CSV is fixed, `ordersync orders retry-import` imports them from the stored downloaded data with zero
Amazon calls (the simulator's counters prove it); an ignored order stays out."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordersync.dev.demo import local_pipeline
from ordersync.schemas.events import OrderEnriched, OrderImported, OrderImportFailed
from ordersync.schemas.topics import ORDERS_ENRICHED, ORDERS_IMPORT_FAILED, ORDERS_IMPORTED
from ordersync.simulator.scenario import UNMAPPED_SKU_PREFIX
from ordersync.simulator.testing import tiny_scenario
from ordersync.state.listings import ListingRow, listings_csv
from tests.topics import read_all, wait_for

pytestmark = pytest.mark.integration

ORDERS = 60


def _imported_ids(bootstrap: str) -> list[str]:
    return [
        e.sales_order.amazon_order_id
        for e in read_all(bootstrap, ORDERS_IMPORTED)
        if isinstance(e, OrderImported)
    ]


def test_unknown_skus_fail_then_retry_import_imports_them_without_calling_amazon(tmp_path: Path) -> None:
    scenario = tiny_scenario(
        orders={"count": ORDERS, "history_s": 3600, "unknown_sku_share": 0.05}, time_scale=60, start=None
    )
    with local_pipeline(
        scenario=scenario,
        run_dir=tmp_path / "run",
        stages=("order-download", "item-fetch", "import"),
        backoffice=False,
    ) as pipeline:
        bootstrap = pipeline.env["ORDERSYNC_KAFKA__BOOTSTRAP"]
        channel = pipeline.channel_names()[0]

        def settled() -> bool:
            return len(_imported_ids(bootstrap)) + len(read_all(bootstrap, ORDERS_IMPORT_FAILED)) == ORDERS

        wait_for(settled)
        failed = [f for f in read_all(bootstrap, ORDERS_IMPORT_FAILED) if isinstance(f, OrderImportFailed)]
        assert len(failed) >= 2, "the scenario should have unknown SKUs"
        assert {f.reason_code for f in failed} == {"unknown_stock_code"}
        assert all(
            f.reason.startswith(f"Unknown stock code for seller SKU {UNMAPPED_SKU_PREFIX}") for f in failed
        )
        failed_ids = sorted({f.amazon_order_id for f in failed})

        # Amazon is out of the picture from here: no stage that could call it is left running.
        pipeline.kill("order-download")
        pipeline.kill("item-fetch")
        _, _, calls_before = pipeline.truth()

        # The back-office fixes its listings: the unknown SKUs get stock codes.
        unknown = sorted(
            {
                item.seller_sku
                for e in read_all(bootstrap, ORDERS_ENRICHED)
                if isinstance(e, OrderEnriched)
                for item in e.order.items or ()
                if item.seller_sku and item.seller_sku.startswith(UNMAPPED_SKU_PREFIX)
            }
        )
        fixed = tmp_path / "fixed.csv"
        fixed.write_text(listings_csv([ListingRow(f"STK-{sku}", sku) for sku in unknown]))
        pipeline.cli("listings", "import", str(fixed), "--channel", channel)

        ignored, retried = failed_ids[0], failed_ids[1:]
        assert "sent as event" in pipeline.cli("orders", "ignore", "--channel", channel, ignored)
        # The ignored order is named first: when the others are in, its turn has passed.
        output = pipeline.cli("orders", "retry-import", "--channel", channel, ignored, *retried)
        assert "sent as event" in output

        wait_for(lambda: set(retried) <= set(_imported_ids(bootstrap)))
        imported = _imported_ids(bootstrap)
        assert len(imported) == len(set(imported)) == ORDERS - 1  # one sales order per order, ever
        assert ignored not in imported
        _, _, calls_after = pipeline.truth()
        assert calls_after == calls_before

        rejected = pipeline.cli_result("orders", "retry-import", "--channel", "no-such-channel", ignored)
        assert rejected.returncode == 3  # an unknown name (ordersync.cli.common.ExitCode)
