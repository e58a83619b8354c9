"""``python -m node_agent.backends.qemu build [IMAGES_DIR]``: what ``make setup`` runs (assets.py)."""

import sys

from node_agent.backends.qemu.assets import main

sys.exit(main(sys.argv[1:]))
