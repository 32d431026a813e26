"""The operator's view of a box: a local admin socket, Prometheus metrics, journal logs.

Only the box's operator reaches it: the admin socket is a Unix socket of mode 0600 in the
server's state directory, the metrics endpoint listens on loopback unless told otherwise.
"""
