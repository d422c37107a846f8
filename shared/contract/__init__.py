"""The wire contract: ride events and predictions (pydantic, with a msgspec mirror for fast
decoding), their bytes, and the topic names. Outside clients are built against this."""
