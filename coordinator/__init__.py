"""The coordinator: validation, fan-out to the agents, aggregation, answers (grpc.aio)."""
