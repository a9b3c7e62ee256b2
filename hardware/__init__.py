"""Hardware: CPU topology, pinning, priority and memory settings.

Nothing is implemented here yet: topology, the pinning plan and
``python -m hardware`` arrive with the hardware actor (issue 7). The package
exists so the layout and the distribution are in place.
"""

__all__: list[str] = []
