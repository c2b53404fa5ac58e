"""ordersync: keeps an Amazon seller's back-office in sync with Amazon."""

from __future__ import annotations

__version__ = "0.1.0"
