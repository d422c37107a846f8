"""Talking to Kafka: the one settings object and the one client factory every part uses."""
