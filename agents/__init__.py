"""Agents: the actor network (torch), its ONNX artifact, and the agent server (no torch)."""
