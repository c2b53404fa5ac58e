"""From the outside world into Kafka: the Amazon order poller, the inventory feed producer."""
