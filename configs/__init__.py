"""Packaged configuration files: tactical_marl_v1.yaml holds every default; demo.yaml the demo's changes."""

from pathlib import Path

DEFAULT_CONFIG_PATH = Path(__file__).with_name("tactical_marl_v1.yaml")
DEMO_CONFIG_PATH = Path(__file__).with_name("demo.yaml")  # what `tactical demo` merges over the defaults
