"""Shard: a file spread over N boxes with a fountain code, recoverable from any K of them.

Everything is on the user's side: ``codec`` encodes with RaptorQ (RFC 6330) and seals each
shard (ChaCha20-Poly1305, a key only the client holds); ``placement`` picks N boxes from the
consensus apart from each other; ``manifest`` is the one small file the user keeps; ``client``
stores the shards in standard Dropboxes and fetches them back. The boxes run nothing of
Shard's own: each holds one sealed shard in a Dropbox and learns neither the file nor its size
beyond its shard's.
"""
