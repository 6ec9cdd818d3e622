"""`python -m pvtrace` runs the same program as the `pvtrace` command."""

from pvtrace.cli import main

if __name__ == "__main__":
    main()
