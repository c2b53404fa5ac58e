"""The data keys on a real S3 protocol server (moto's, on loopback), wrapped by a local key or by KMS:
one key per seller and day of delivery whoever makes it first, opened by any worker, destroyed when its
retention ends, and still readable through a rotation of the key-encryption key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from ordersync.aws import aws_client
from ordersync.clock import ManualClock
from ordersync.errors import PersonalDataErased, PersonalDataExpired
from ordersync.privacy import key_id_for, new_kek, seal, shred_after, unseal
from ordersync.privacy.keyring import StoredKey, open_key_ring
from ordersync.privacy.orders import open_order, seal_order, subject
from ordersync.schemas.events import Address
from ordersync.settings import LOCAL_AWS_KEY, AwsSettings, PrivacySettings, get_settings
from tests.factories import order

pytestmark = pytest.mark.stage

DELIVERED = datetime(2026, 12, 3, 15, tzinfo=UTC)
SUBJECT = "A1ACME:111-1111111-1111111"
FIELDS = {"buyer_name": "Jane Buyer", "line1": "1 Main St"}


@pytest.fixture
def privacy() -> PrivacySettings:
    return PrivacySettings(key_bucket=f"keys-{uuid.uuid4().hex[:12]}", kek=SecretStr(new_kek()))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as opened:
        yield opened


async def test_one_key_per_seller_and_day_whoever_makes_it(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    clock = ManualClock(DELIVERED)
    # Two workers (two processes' key rings) make the same day's key at once: one key results.
    first, second = [await open_key_ring(privacy, aws, clock, stack) for _ in range(2)]
    key_id = key_id_for("A1ACME", DELIVERED)
    one, other = await asyncio.gather(first.sealing_key(key_id), second.sealing_key(key_id))
    assert one.secret == other.secret
    assert await first.store.key_ids() == [key_id]
    # Another day, another key; the stored key is wrapped, never the secret itself.
    later = await first.sealing_key(key_id_for("A1ACME", datetime(2026, 12, 10, tzinfo=UTC)))
    assert later.secret != one.secret
    stored = await first.store.get(key_id)
    assert stored is not None
    assert one.secret not in stored.to_json()
    # A third worker, started later, opens what the first sealed.
    sealed = seal(FIELDS, one, SUBJECT)
    third = await open_key_ring(privacy, aws, clock, stack)
    assert unseal(sealed, await third.opening_key(sealed.key_id), SUBJECT) == FIELDS


async def test_the_key_is_destroyed_when_its_retention_ends(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    clock = ManualClock(DELIVERED)
    ring = await open_key_ring(privacy, aws, clock, stack)
    key_id = key_id_for("A1ACME", DELIVERED)
    sealed = seal(FIELDS, await ring.sealing_key(key_id), SUBJECT)
    next_day = await ring.sealing_key(key_id_for("A1ACME", datetime(2026, 12, 10, tzinfo=UTC)))
    assert await ring.shred_due() == []
    clock.advance((shred_after(key_id) - clock.now()).total_seconds())
    assert await ring.shred_due() == [key_id]
    assert await ring.store.key_ids() == [next_day.key_id]
    # Gone for this worker, whose memory held it, and for any other.
    with pytest.raises(PersonalDataExpired, match="expired"):
        await ring.opening_key(sealed.key_id)
    other = await open_key_ring(privacy, aws, ManualClock(DELIVERED), stack)
    with pytest.raises(PersonalDataExpired):
        await other.opening_key(sealed.key_id)  # its clock is behind, but the key is gone
    # An order of that day downloaded now is not sealed again: its data must not be kept.
    with pytest.raises(PersonalDataExpired):
        await ring.sealing_key(key_id)
    assert key_id not in await ring.store.key_ids()


async def test_a_rotated_key_encryption_key_keeps_every_key_readable(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    clock = ManualClock(DELIVERED)
    ring = await open_key_ring(privacy, aws, clock, stack)
    key = await ring.sealing_key(key_id_for("A1ACME", DELIVERED))
    sealed = seal(FIELDS, key, SUBJECT)
    rotated = privacy.model_copy(
        update={"kek": SecretStr(new_kek()), "kek_id": "local-2", "previous_keks": {"local-1": privacy.kek}}
    )
    during = await open_key_ring(rotated, aws, clock, stack)
    assert unseal(sealed, await during.opening_key(sealed.key_id), SUBJECT) == FIELDS
    assert await during.rewrap() == 1
    assert await during.rewrap() == 0
    # Once every key is wrapped by the new one, the old one can go.
    after = await open_key_ring(rotated.model_copy(update={"previous_keks": {}}), aws, clock, stack)
    assert unseal(sealed, await after.opening_key(sealed.key_id), SUBJECT) == FIELDS


async def test_kms_wraps_the_keys_and_opens_what_a_local_key_wrapped(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    async with aws_client(aws, "kms") as kms:
        created = await kms.create_key(Description="ordersync test", KeyUsage="ENCRYPT_DECRYPT")
    kms_key = created["KeyMetadata"]["Arn"]
    clock = ManualClock(DELIVERED)
    local_ring = await open_key_ring(privacy, aws, clock, stack)
    sealed = seal(FIELDS, await local_ring.sealing_key(key_id_for("A1ACME", DELIVERED)), SUBJECT)
    # The move to KMS: the local key stays configured until rewrap is done.
    moving = privacy.model_copy(update={"kms_key_id": kms_key})
    kms_ring = await open_key_ring(moving, aws, clock, stack)
    assert unseal(sealed, await kms_ring.opening_key(sealed.key_id), SUBJECT) == FIELDS
    assert await kms_ring.rewrap() == 1
    stored = await kms_ring.store.get(sealed.key_id)
    assert stored is not None
    assert stored.wrapped_by == f"kms:{kms_key}"
    kms_only = await open_key_ring(moving.model_copy(update={"kek": None}), aws, clock, stack)
    assert unseal(sealed, await kms_only.opening_key(sealed.key_id), SUBJECT) == FIELDS
    new_day = await kms_only.sealing_key(key_id_for("A1ACME", datetime(2026, 12, 10, tzinfo=UTC)))
    assert len(new_day.secret) == 32


@pytest.fixture
def settings_read_again() -> Iterator[None]:
    """The process's cached settings are forgotten after the test (it changes the environment)."""
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("settings_read_again")
def test_the_privacy_commands_list_shred_and_rewrap_the_keys(
    aws: AwsSettings, privacy: PrivacySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner, Result  # noqa: PLC0415

    from ordersync.cli.privacy import privacy_app  # noqa: PLC0415

    # A day long past and one far ahead, whatever today is.
    past, future = "A1ACME/2020-01-01", "A1ACME/2099-01-01"

    async def store_keys() -> None:
        async with AsyncExitStack() as stack:
            ring = await open_key_ring(privacy, aws, ManualClock(DELIVERED), stack)
            for key_id in (past, future):
                wrapped = await ring.wrapper.wrap(b"k" * 32, key_id)
                assert await ring.store.create(StoredKey(key_id, wrapped, ring.wrapper.name, "2020-01-01"))

    asyncio.run(store_keys())
    assert privacy.kek is not None
    for name, value in {
        "ORDERSYNC_AWS__ENDPOINT_URL": aws.endpoint_url or "",
        "ORDERSYNC_AWS__ACCESS_KEY_ID": LOCAL_AWS_KEY,
        "ORDERSYNC_AWS__SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
        "ORDERSYNC_PRIVACY__KEY_BUCKET": privacy.key_bucket,
        "ORDERSYNC_PRIVACY__KEK": privacy.kek.get_secret_value(),
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        get_settings.cache_clear()  # the environment changed
        return runner.invoke(privacy_app, list(args))

    def run(*args: str) -> str:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        return result.output

    listed = run("keys")
    assert past in listed
    assert future in listed
    assert run("shred") == f"destroyed {past}\n"
    assert run("shred") == "no key was due\n"
    assert past not in run("keys")
    assert len(run("new-kek").strip()) == 44  # 32 bytes in base64
    # A rotation: the new key wraps, the old one still unwraps until rewrap is done.
    monkeypatch.setenv("ORDERSYNC_PRIVACY__KEK", new_kek())
    monkeypatch.setenv("ORDERSYNC_PRIVACY__KEK_ID", "local-2")
    previous = privacy.kek.get_secret_value()
    monkeypatch.setenv("ORDERSYNC_PRIVACY__PREVIOUS_KEKS", f'{{"local-1": "{previous}"}}')
    assert run("rewrap") == "1 keys re-wrapped\n"
    monkeypatch.delenv("ORDERSYNC_PRIVACY__KEK")
    unconfigured = invoke("keys")
    assert unconfigured.exit_code == 7  # a configuration error (ordersync.cli.common.ExitCode)
    assert "no key-encryption key" in unconfigured.output


async def test_the_status_projection_destroys_the_keys_due(
    make_runtime: Any, aws: AwsSettings, privacy: PrivacySettings
) -> None:
    from ordersync.consumers.status_projection import SHRED_TASK, shred_once  # noqa: PLC0415
    from ordersync.simulator.runner import RunningSimulator  # noqa: PLC0415
    from ordersync.simulator.testing import tiny_scenario  # noqa: PLC0415

    scenario = tiny_scenario(orders={"count": 1})
    with RunningSimulator(scenario) as sim:
        runtime = await make_runtime(
            "status-projection", scenario, sim, other_settings={"aws": aws, "privacy": privacy}
        )
        ring = await runtime.key_ring()
        now = runtime.clock.now()
        # Delivered 31 days before Amazon's now (due) and yesterday (kept).
        due, kept = (key_id_for("A1ACME", now - timedelta(days=days)) for days in (32, 1))
        for key_id in (due, kept):
            wrapped = await ring.wrapper.wrap(b"k" * 32, key_id)
            assert await ring.store.create(StoredKey(key_id, wrapped, ring.wrapper.name, now.isoformat()))
        assert await shred_once(runtime) == [due]
        assert await ring.store.key_ids() == [kept]
        health = await runtime.store.task(SHRED_TASK, "all")
        assert health["last_result"] == f"1 keys destroyed: {due}"
        assert await shred_once(runtime) == []


async def test_a_key_kept_longer_by_law_outlives_the_thirty_days_and_records_why(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    clock = ManualClock(DELIVERED)
    ring = await open_key_ring(privacy, aws, clock, stack)
    reason = "German tax code (AO 147): invoices 10 years"
    usual, by_law = key_id_for("A1ACME", DELIVERED), key_id_for("A1ACME", DELIVERED, retention_days=365)
    await ring.sealing_key(usual)
    sealed = seal(FIELDS, await ring.sealing_key(by_law, reason=reason), SUBJECT)
    stored = await ring.store.get(by_law)
    assert stored is not None
    assert stored.retention_reason == reason
    # Past 30 days: only the usual key goes.
    clock.advance((shred_after(usual) - clock.now()).total_seconds())
    assert await ring.shred_due() == [usual]
    assert unseal(sealed, await ring.opening_key(by_law), SUBJECT) == FIELDS
    # A re-wrap after a rotation keeps the reason.
    rotated = privacy.model_copy(
        update={"kek": SecretStr(new_kek()), "kek_id": "next", "previous_keks": {privacy.kek_id: privacy.kek}}
    )
    assert await (await open_key_ring(rotated, aws, clock, stack)).rewrap() == 1
    rewrapped = await ring.store.get(by_law)
    assert rewrapped is not None
    assert (rewrapped.retention_reason, rewrapped.wrapped_by) == (reason, "local:next")
    clock.advance((shred_after(by_law) - clock.now()).total_seconds())
    assert await ring.shred_due() == [by_law]


async def test_an_erased_order_is_never_opened_or_sealed_again_and_its_mark_goes_with_the_key(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    clock = ManualClock(DELIVERED)
    ring = await open_key_ring(privacy, aws, clock, stack)
    jane = order(
        amazon_order_id="111-0000000-0000001",
        buyer_name="Jane Buyer",
        latest_delivery_date=DELIVERED,
        shipping_address=Address(name="Jane Buyer", line1="1 Main St", city="Seattle", country_code="US"),
    )
    john = jane.model_copy(update={"amazon_order_id": "111-0000000-0000002", "buyer_name": "John Buyer"})
    sealed_jane, sealed_john = await seal_order(jane, ring), await seal_order(john, ring)
    assert sealed_jane.personal is not None
    key_id = sealed_jane.personal.key_id
    await ring.erase(key_id, subject(jane), by="privacy officer", note="request 42")
    # Every worker refuses it: this one at once, another (a fresh ring) from the store.
    other = await open_key_ring(privacy, aws, clock, stack)
    for worker in (ring, other):
        with pytest.raises(PersonalDataErased, match="erased on request"):
            await open_order(sealed_jane, worker)
        assert (await open_order(sealed_john, worker)).buyer_name == "John Buyer"
    # Amazon's copy, downloaded again, is not kept.
    again = await seal_order(jane, other)
    assert again.personal is None
    assert again.buyer_name is None
    assert again.shipping_address is not None
    assert again.shipping_address.city == "Seattle"
    # The day's key destroyed early (--shred-day): its erasure marks go with it, and the day's other
    # orders are gone too (for a worker that held the key in memory, within its cache time).
    await ring.shred(key_id)
    assert await ring.store.erasures(key_id) == set()
    with pytest.raises(PersonalDataExpired):
        await open_order(sealed_john, ring)
    with pytest.raises(PersonalDataExpired):
        await open_order(sealed_john, await open_key_ring(privacy, aws, clock, stack))


async def test_a_worker_whose_clock_runs_behind_never_makes_a_destroyed_key_again(
    aws: AwsSettings, privacy: PrivacySettings, stack: AsyncExitStack
) -> None:
    key_id = key_id_for("A1ACME", DELIVERED)
    ahead = ManualClock(shred_after(key_id))
    shredder = await open_key_ring(privacy, aws, ahead, stack)
    behind = await open_key_ring(privacy, aws, ManualClock(DELIVERED), stack)
    await behind.sealing_key(key_id)
    assert await shredder.shred_due() == [key_id]
    # The lagging worker's clock says the day is still kept; the marker says the key is gone.
    other = await open_key_ring(privacy, aws, ManualClock(DELIVERED), stack)
    with pytest.raises(PersonalDataExpired):
        await other.sealing_key(key_id)
    assert await shredder.store.key_ids() == []
    # A year on, the marker goes too.
    ahead.advance(366 * 86400)
    assert await shredder.shred_due() == []
    assert await shredder.store.shredded_ids() == []
