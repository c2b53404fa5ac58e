"""State in Redis: the store, the key catalogue, API health and the read model. Redis is fast state
that can be rebuilt from Kafka, the record."""
