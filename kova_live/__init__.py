"""kova_live: the Kova core in real time: the orchestrator (``kova-live serve``), the provider agent
and the tenant CLI.

Not built yet: it is the subject of the orchestrator, provider and ingress issues, which follow the
core. Nothing here is imported by ``kova_core``, which must stay independent of its drivers.
"""
