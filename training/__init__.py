"""Training: the system module, checkpoints, the PettingZoo environment, MAPPO, tuning."""
