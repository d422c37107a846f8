"""The wire contract and what every part of ridestream shares: schemas, topics, settings, Kafka clients."""
