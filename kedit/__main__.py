"""``python -m kedit`` runs the same command line as the ``kedit`` script."""

from kedit.cli import app

if __name__ == "__main__":
    app(prog_name="kedit")
