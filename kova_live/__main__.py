"""``python -m kova_live`` is ``kova-live``."""

from .cli import main

main()
