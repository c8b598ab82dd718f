"""The agent's local status page: 127.0.0.1 only, password protected, read-only.

docuFORM's agents show a local page to the technician on site; ours shows the
same facts as ``fleetroom-agent status --json``.  It is a tiny asyncio HTTP/1.1
server of our own (GET only, one request per connection, strict size and time
limits) rather than a web framework: the agent must stay small, and a page
that cannot change anything needs no more.
"""
