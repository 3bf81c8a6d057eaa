"""``python -m trio_llm.testing``: run the mock OpenAI-compatible server (see ``--help``)."""

import sys

from ._mock_main import mock_server_main

sys.exit(mock_server_main())
