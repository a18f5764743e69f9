"""The agents' serving side, torch-free: the artifact format, version stores, the ONNX runner, the agent server."""
