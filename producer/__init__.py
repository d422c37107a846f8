"""The backend: ride simulator and TLC replay, the initial duration estimate, publishing ride events."""
