"""`python -m bot.cli`: the `arbiter` command, for a checkout without the console script."""

from bot.cli import main

raise SystemExit(main())
