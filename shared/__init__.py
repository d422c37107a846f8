"""What every part of ridestream shares, grouped by concern; it imports nothing of ours outside itself.

- ``contract/``: the wire contract — events, predictions, their bytes, topic names
- ``kafka/``: the one settings object and the one Kafka client factory
- ``data/``: NYC TLC trip files, the zone table, the taxi meter and the ride simulator
- ``ml/``: features, model artifacts, compiled trees, the cost model
- ``errors.py``: the one-line errors a user can meet

The layers: ``contract`` ← ``kafka``; ``contract`` ← ``data`` ← ``ml``.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the repository (or the installed tree)
