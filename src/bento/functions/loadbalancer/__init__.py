"""LoadBalancer: one onion address for a service, its connections spread over replicas.

``policy`` (the decisions), ``function`` (the LoadBalancer) and ``replica`` (the wrapper
around the user's service) run on boxes: ``policy`` and ``replica`` use the standard
library only, ``function`` the client library a box offers (``needs.call_boxes``).
``client`` is the user's side.
"""
