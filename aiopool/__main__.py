"""`python -m aiopool`: the command line (`aiopool get ...`, `aiopool bench ...`)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
