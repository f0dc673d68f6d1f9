"""Online serving: launch an OpenAI-compatible server, send requests that arrive like real
traffic, and measure latency and the energy the serving GPUs draw.

Modules: `arrivals` (when requests are sent), `client` (one streaming request), `loadgen`
(the send loop), `online_metrics` (latency percentiles, steady-state window, goodput,
energy), `launch` (start and always stop a server), `compare` (offline vs online).
"""
