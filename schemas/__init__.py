"""Event models, the versioned envelope, the codec and the topic catalogue."""
