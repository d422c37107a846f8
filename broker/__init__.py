"""A real single-node Apache Kafka (KRaft) for development and tests, assembled from Maven Central."""
