"""The consumer service: streaming-pull pool, push endpoint, message handling and the ack policy."""
