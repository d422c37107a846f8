"""ridestream: real-time ML on taxi-ride events with Apache Kafka and scikit-learn.

This package is the composition root: the one command line, ``ridestream …``, that wires the
backend (``producer``), the fleet (``consumers``), ``training`` and the local ``broker``.
"""

__version__ = "0.1.0"
