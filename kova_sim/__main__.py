"""``python -m kova_sim`` is ``kova-sim``."""

from .cli import main

main()
