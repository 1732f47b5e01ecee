"""``python -m llamonitor.cli``."""

from llamonitor.cli import main

if __name__ == "__main__":
    main()
