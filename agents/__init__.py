"""Agents: the actor (agents.model, torch) and everything that serves it (agents.serving, no torch)."""
