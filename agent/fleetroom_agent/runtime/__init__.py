"""The long-running agent (``fleetroom-agent run``): config, schedule, collection, commands.

One asyncio process, no web framework: :mod:`.config` reads the TOML file strictly,
:mod:`.scheduler` decides when work is due (monotonic time, server-steered
schedule with jitter), :mod:`.collector` turns SNMP reads into outbox items,
:mod:`.commands` executes the server's signed commands within local policy, and
:mod:`.app` runs all of it — with the sender and the local status page — in one
``asyncio.TaskGroup``.  :mod:`.state` is what ``fleetroom-agent status`` reads
from another process.
"""
