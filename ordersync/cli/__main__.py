"""``python -m ordersync.cli ...``, as the demo and the tests start processes."""

from ordersync.cli.main import main

main()
