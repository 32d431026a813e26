"""Dropbox: deposit data at a box; only the holder of its token fetches it, within limits.

``deposits`` and ``function`` run on the box (standard library only, uploaded as the
package ``bento_dropbox``); ``client`` is the user's side.
"""
