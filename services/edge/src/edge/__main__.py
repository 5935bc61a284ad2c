import asyncio

from edge.server import serve
from edge.settings import EdgeSettings
from svckit.settings import load_settings

asyncio.run(serve(load_settings(EdgeSettings)))
