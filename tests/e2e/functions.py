"""Functions the end-to-end tests deploy (uploaded as source; never imported by the tests)."""

HELLO = """
from bento.runtime import api

def main(name="world"):
    api.send(f"hello {name}\\n")
    return {"greeted": name}
"""

ECHO = """
from bento.runtime import api

def upper():
    rounds = 0
    while (data := api.recv()) is not None:
        api.send(data.upper())
        rounds += 1
    return rounds
"""

STREAM = '''
import hashlib
from bento.runtime import api

def blocks(count, size=65536):
    """Send ``count`` numbered blocks of ``size`` bytes; return the sha256 of all of them."""
    digest = hashlib.sha256()
    for i in range(count):
        head = i.to_bytes(8, "big")
        block = head + hashlib.sha256(head).digest() * ((size - 8) // 32) + bytes((size - 8) % 32)
        digest.update(block)
        api.send(block)
    return digest.hexdigest()
'''

SLOW = """
import time
from bento.runtime import api

def nap(seconds, tag):
    time.sleep(seconds)
    api.send(f"{tag}\\n")
    return tag
"""

BROKEN = """
import os
from bento.runtime import api

def fail(message):
    api.send("about to fail\\n")
    raise ValueError(message)

def vanish(code):
    os._exit(code)

def not_json():
    return object()
"""
