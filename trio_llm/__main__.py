"""``python -m trio_llm``: the same command line as ``trio-llm``."""

from ._cli import main

raise SystemExit(main())
