import asyncio

from pricing.server import serve
from pricing.settings import PricingSettings
from svckit.settings import load_settings

asyncio.run(serve(load_settings(PricingSettings)))
