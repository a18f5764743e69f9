"""The top of the house: the Python client, the in-process engine, the launcher, rollout and backtest
operations, and the `tactical` command line."""
