"""`python -m training ARGS` runs `tactical train ARGS`; it is the module torchrun launches:

    torchrun --nproc_per_node 2 -m training --config my.yaml --updates 100
"""

import sys

from tactical.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
