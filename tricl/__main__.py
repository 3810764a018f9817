"""``python -m tricl`` (and ``torchrun -m tricl train ...``) run the command line."""

from tricl.cli import main

raise SystemExit(main())
