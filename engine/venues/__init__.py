"""Venues: where orders go (the simulated venue; Binance in a later step)."""
