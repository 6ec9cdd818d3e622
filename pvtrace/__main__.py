"""`python -m pvtrace` runs the same CLI as the `pvtrace` command."""

from pvtrace.cli.app import app

if __name__ == "__main__":
    app(prog_name="pvtrace")
