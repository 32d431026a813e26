"""Bento: programmable middleboxes for Tor.

Tor users upload small Python functions to relays that opt in (Bento boxes) and run them
there, every byte over Tor. See the README and docs/ for the tour.
"""

__version__ = "0.1.0"
