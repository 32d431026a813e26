"""Browser: fetch a whole web page at an exit box, pack it, pad it, send it back.

The modules that run on the box (``wire``, ``pad``, ``discover``, ``rewrite``, ``fetch``,
``pack``, ``function``) use the standard library only and import each other relatively,
because they are uploaded as their own package (``bento_browser``) and run in a sandbox
that has nothing else. ``client`` is the user's side: it imports the rest of Bento.
"""
