"""``python -m backflush``: the command line."""

from backflush.cli.main import main

if __name__ == "__main__":
    main()
