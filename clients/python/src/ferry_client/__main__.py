"""``python -m ferry_client …``: the command line of ``ferry_client.cli``."""

from ferry_client.cli import main

main(prog="python -m ferry_client")
