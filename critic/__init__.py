"""The centralized critic of MAPPO (torch)."""
