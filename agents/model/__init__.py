"""The agents' model side: the actor network and its ONNX export (torch; the only torch in agents/)."""
