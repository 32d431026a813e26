"""Bento's standard functions: each is the code a box runs and the client side that drives it."""
