"""`python -m mailer`: the same entry point as the `mailer` console script."""

from __future__ import annotations

from mailer.cli import main

if __name__ == "__main__":
    main()
