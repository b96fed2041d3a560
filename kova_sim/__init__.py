"""kova_sim: the Kova core driven by a SimPy clock, for economics research (``kova-sim run``).

Not built yet: it is the subject of the simulator issue, which follows the core. Nothing here is
imported by ``kova_core``, which must stay independent of its drivers.
"""
