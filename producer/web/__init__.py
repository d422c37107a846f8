"""The backend as a web service: the rider's HTTP API, live predictions over Server-Sent Events,
synchronous scoring, and the rider and operator pages (``static/``)."""
