"""Packaged configuration files; tactical_marl_v1.yaml holds every default."""

from pathlib import Path

DEFAULT_CONFIG_PATH = Path(__file__).with_name("tactical_marl_v1.yaml")
