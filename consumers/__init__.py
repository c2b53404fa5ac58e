"""From Kafka out to the world: the shipment write-back."""
