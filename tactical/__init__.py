"""Tactical decision engine: three MAPPO-trained agents served over gRPC behind one coordinator."""

__version__ = "0.1.0"
