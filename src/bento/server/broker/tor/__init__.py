"""Tor for functions, as the broker serves it: circuits, streams, the consensus, onion services.

- ``requests``: one strict model per ``tor.*`` request;
- ``operations``: their handlers, registered in the broker's table;
- ``instance``: one instance's Tor (:class:`InstanceTor`): permissions, budgets, ownership;
- ``service``: the box's client-only tor for functions (:class:`TorForFunctions`), the only
  code that acts on it;
- ``books``: what each function holds in it.
"""
