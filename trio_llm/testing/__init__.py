"""A built-in mock of the OpenAI chat completions API, for tests, demos and benchmarks.

No key and no network: the mock answers each prompt with a deterministic reply (arithmetic
prompts get the right answer), enforces per-key RPM / TPM limits with OpenAI's 429s and
headers, adds latency, and injects seeded faults (5xx, dropped connections, hangs, malformed
bodies...) so that a client's retries and bookkeeping can be tested end to end.

Run it:

- in this trio program: ``async with serve_mock(config) as server: ...`` (hypercorn);
- in its own process: ``with MockServerProcess(config) as proc: ...`` (uvicorn or hypercorn);
- from a shell: ``python -m trio_llm.testing --rpm 500`` (see :func:`mock_server_main`);
- socket-free: ``httpx.ASGITransport(app=MockApp(config))``.

Predict its answers with :func:`mock_reply` and :func:`count_tokens`.

It also imitates what real servers send (issue 15; each shape quoted in
``tests/real_shapes.py``): other servers' rate-limit headers and 429 bodies
(``headers="none"``, ``"litellm"``, ``"groq"``, ``"anthropic"``, ``"azure"``...), fixed
calendar-minute windows, LiteLLM's hold-then-200, header-less outages, keys whose window is used
up at the start, Anthropic's ``POST /v1/messages``, and faults in real servers' shapes (refusals,
content parts, ``choices: []``, cache and reasoning usage, vLLM / Anthropic context-length
errors, credit-balance and unknown-key 400s).
"""

from ._mock_config import DEFAULT_FAULT_MIX as DEFAULT_FAULT_MIX
from ._mock_config import FAULT_KINDS as FAULT_KINDS
from ._mock_config import FaultKind as FaultKind
from ._mock_config import HeaderDialect as HeaderDialect
from ._mock_config import MockServerConfig as MockServerConfig
from ._mock_content import count_tokens as count_tokens
from ._mock_content import mock_reply as mock_reply
from ._mock_limits import format_reset as format_reset
from ._mock_main import mock_server_main as mock_server_main
from ._mock_process import MockServerProcess as MockServerProcess
from ._mock_serve import MockServer as MockServer
from ._mock_serve import serve_mock as serve_mock
from ._mock_server import MockApp as MockApp
from ._mock_stats import MockStats as MockStats

__all__ = [
    "DEFAULT_FAULT_MIX",
    "FAULT_KINDS",
    "FaultKind",
    "HeaderDialect",
    "MockApp",
    "MockServer",
    "MockServerConfig",
    "MockServerProcess",
    "MockStats",
    "count_tokens",
    "format_reset",
    "mock_reply",
    "mock_server_main",
    "serve_mock",
]
