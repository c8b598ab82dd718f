"""Profile-driven collection: what to ask a device, and what its answers mean.

I/O (:mod:`.reader`) is kept apart from interpretation (:mod:`.standard`,
:mod:`.supplies`, :mod:`.vendor`), which works on a :class:`.snapshot.DeviceSnapshot`
of raw answers — so every rule can be tested on a recording without a network.
"""
