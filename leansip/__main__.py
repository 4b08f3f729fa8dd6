"""``python -m leansip`` runs the same command line as the ``leansip`` console script."""

from leansip.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
