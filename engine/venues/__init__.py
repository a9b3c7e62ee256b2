"""Venues: where orders go (the simulated venue, Binance), behind one protocol."""

from ._protocol import ConnectedVenue as ConnectedVenue
from ._protocol import FaultDrills as FaultDrills
from ._protocol import Venue as Venue

__all__ = ["ConnectedVenue", "FaultDrills", "Venue"]
