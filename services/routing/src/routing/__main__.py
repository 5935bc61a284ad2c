import asyncio

from routing.server import serve
from routing.settings import RoutingSettings
from svckit.settings import load_settings

asyncio.run(serve(load_settings(RoutingSettings)))
