"""The model-API gateway: how an agent that runs inside the sandbox (Claude Code, Codex CLI)
reaches its model without the API key entering the sandbox.

One gateway per trial, on the host, listening on a Unix socket in a folder only the sandbox's
user may enter, mounted into the sandbox (which has no network; a tiny forwarder there turns
127.0.0.1:PORT into that socket, opening each connection with the trial's secret, which no
other process on the host holds). It forwards only the provider's model endpoints (POST, no
other path, no other host, no provider-side tool unless the task allows it) to the real API,
or to ANTHROPIC_BASE_URL / OPENAI_BASE_URL / --base-url, swapping whatever key the request
carries (the sandbox's worthless placeholder) for the real one. Responses, server-sent events
included, go back as they arrive. Bodies, connections and calls in flight are bounded
(framing.py, server.py, policy.py), so that a hostile sandbox cannot grow the host process.

On the way it does what the built-in agent's loop does: every call is appended to
transcript.jsonl in the same event format (start, model_call, tool_result, stop), each raw
exchange kept in logs/gateway/; tokens, cache tokens and cost are summed in the trial's
`Budget`, a call admitted only while the calls in flight cannot already reach a limit, and a
stream cut before its usage event charged what was sent and streamed; past a limit (turns,
tokens, cost, wall time) further calls are refused and `stopped` is set, so that the agent
ends the CLI and the submission is verified.
"""

from .framing import MAX_BODY
from .policy import KINDS, MAX_IN_FLIGHT, provider_tools
from .listener import MAX_CONNECTIONS, socket_dir
from .server import MAX_TOKEN_COUNTS, PLACEHOLDER_KEY, PREAMBLE, ROUTES, Gateway
from .upstream import connection, provider_fault, proxy_for, target, upstream

__all__ = ["KINDS", "MAX_BODY", "MAX_CONNECTIONS", "MAX_IN_FLIGHT", "MAX_TOKEN_COUNTS", "PLACEHOLDER_KEY", "PREAMBLE",
           "ROUTES", "Gateway", "connection", "provider_fault", "provider_tools", "proxy_for", "socket_dir", "target",
           "upstream"]
