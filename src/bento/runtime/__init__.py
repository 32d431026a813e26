"""What runs inside a function instance: the entry point and the ``api`` functions import.

Standard library only: the runtime is all a sandbox needs to see of Bento.
"""
