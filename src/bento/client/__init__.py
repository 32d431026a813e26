"""The Bento client: find boxes, deploy functions, talk to them, all over Tor.

async with Box.connect("exit0", socks="127.0.0.1:9050", control="127.0.0.1:9051") as box:
    deployed = await box.deploy(Path("hello.py"), Manifest(name="hello"))
    session = await box.invoke(deployed, "main", ["world"])
    async with box.attach(session) as stream:
        async for chunk in stream:
            print(chunk)
    print(stream.ended.result)
"""

from bento.client.box import Box
from bento.client.discovery import BoxInfo, discover
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream

__all__ = ["Box", "BoxInfo", "Deployment", "Keyring", "SessionStream", "discover"]
