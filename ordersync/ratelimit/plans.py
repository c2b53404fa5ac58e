"""Which token bucket each Amazon operation has, per seller.

Defaults come from Amazon's models (:func:`ordersync.amazon.models.default_plans`), a channel's
``rate_limits`` override them for its seller (Amazon raises some accounts' plans), and ``time_scale``
multiplies every rate so the limiter keeps pace with a time-scaled simulator.

A **margin** (``ratelimit.plan_margin``, per operation ``ratelimit.plan_margins``) keeps the enforced
rate that share below the plan: Amazon's dynamic usage plans can be lower for an account than its
documentation says, and ``x-amzn-RateLimit-Limit`` tells only after a first answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from ordersync.amazon.models import default_plans
from ordersync.channels import Channel, UsagePlan
from ordersync.errors import ConfigurationError


class UnknownOperationError(ConfigurationError):
    """An operation with no usage plan: a typo, or an operation the shipped models do not define."""


class PlanBook:
    """operation x seller -> (rate per second, burst).

    ``amazon_plan`` answers in Amazon's units (what its docs and headers say); ``plan`` is what the
    limiter enforces, the rate multiplied by ``time_scale``.
    """

    def __init__(
        self,
        defaults: Mapping[str, tuple[float, int]] | None = None,
        *,
        overrides: Mapping[str, Mapping[str, UsagePlan]] | None = None,
        time_scale: float = 1.0,
        margin: float = 0.0,
        margins: Mapping[str, float] | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ConfigurationError(f"rate limiter: time_scale must be positive, not {time_scale}")
        for share in (margin, *(margins or {}).values()):
            if not 0 <= share < 1:
                raise ConfigurationError(f"rate limiter: a plan margin is a share in [0, 1), not {share}")
        self.margin = margin
        self.margins = dict(margins or {})
        self._defaults: dict[str, tuple[float, int]] = dict(default_plans() if defaults is None else defaults)
        self._overrides: dict[str, dict[str, tuple[float, int]]] = {}
        self.time_scale = time_scale
        for seller_id, plans in (overrides or {}).items():
            for operation, usage in plans.items():
                self._check_known(operation, where=f"rate_limits of seller {seller_id}")
                self._add_override(seller_id, operation, (usage.rate, usage.burst))

    @classmethod
    def from_channels(
        cls,
        channels: Iterable[Channel],
        *,
        time_scale: float = 1.0,
        defaults: Mapping[str, tuple[float, int]] | None = None,
        margin: float = 0.0,
        margins: Mapping[str, float] | None = None,
    ) -> PlanBook:
        """Defaults plus every channel's ``rate_limits`` (checked against the known operations)."""
        book = cls(defaults, time_scale=time_scale, margin=margin, margins=margins)
        for operation in book.margins:
            book._check_known(operation, where="ratelimit.plan_margins")
        for channel in channels:
            for operation, usage in channel.rate_limits.items():
                book._check_known(operation, where=f"channel {channel.name}: rate_limits")
                book._add_override(channel.seller_id, operation, (usage.rate, usage.burst))
        return book

    def _add_override(self, seller_id: str, operation: str, plan: tuple[float, int]) -> None:
        seller_plans = self._overrides.setdefault(seller_id, {})
        known = seller_plans.get(operation)
        # Two channels of one seller (two regions) sharing a bucket: the stricter plan can only under-use.
        seller_plans[operation] = plan if known is None else (min(known[0], plan[0]), min(known[1], plan[1]))

    def _check_known(self, operation: str, *, where: str) -> None:
        if operation in self._defaults:
            return
        close = difflib.get_close_matches(operation, self._defaults, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownOperationError(f"{where}: no usage plan for operation {operation!r}{hint}")

    def operations(self) -> list[str]:
        return sorted(self._defaults)

    def amazon_plan(self, operation: str, seller_id: str) -> tuple[float, int]:
        """The plan in Amazon's units: the seller's override, else the models' default."""
        override = self._overrides.get(seller_id, {}).get(operation)
        if override is not None:
            return override
        self._check_known(operation, where="rate limiter")
        return self._defaults[operation]

    def margin_of(self, operation: str) -> float:
        """The share of ``operation``'s rate kept unused."""
        return self.margins.get(operation, self.margin)

    def enforced_plan(self, operation: str, seller_id: str) -> tuple[float, int]:
        """Amazon's plan less the operation's margin (Amazon's units): what the limiter grants."""
        rate, burst = self.amazon_plan(operation, seller_id)
        return rate * (1 - self.margin_of(operation)), burst

    def plan(self, operation: str, seller_id: str) -> tuple[float, int]:
        """The plan the limiter enforces: Amazon's rate less the margin, times ``time_scale``; the burst."""
        rate, burst = self.enforced_plan(operation, seller_id)
        return rate * self.time_scale, burst
