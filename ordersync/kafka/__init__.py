"""How ordersync talks to the broker."""
