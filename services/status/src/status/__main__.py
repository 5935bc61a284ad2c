import asyncio

from status.server import serve
from status.settings import StatusSettings
from svckit.settings import load_settings

asyncio.run(serve(load_settings(StatusSettings)))
