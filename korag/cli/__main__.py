"""``python -m korag.cli``."""

from korag.cli.main import main

raise SystemExit(main())
