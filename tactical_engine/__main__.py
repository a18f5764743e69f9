"""`python -m tactical_engine ARGS` is the `tactical` command (also what torchrun launches:
`torchrun --nproc_per_node 2 -m tactical_engine train ...`)."""

import sys

from tactical_engine.cli import main

sys.exit(main())
