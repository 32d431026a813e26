"""Cover: keep Tor circuits busy at a constant rate, so a watcher cannot tell use from idleness.

Two kinds (see docs/functions.md, "Cover"):

- *link cover* keeps a Bento session's own stream at a constant cell rate; it is part of the
  session protocol (``bento.client.cover``, ``bento.server.cover``), asked for with
  ``--cover RATE`` on ``bento browse`` and ``bento invoke``;
- *circuit cover* (the poster's version) is this function: on a box, it builds a number of
  circuits and sends junk through each at a set rate for a set time, to a sink of its own.

``function`` runs on the box (standard library only, uploaded as the package
``bento_cover``); ``client`` is the user's side.
"""
