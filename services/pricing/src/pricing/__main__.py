from svckit.server import run
from svckit.settings import load_settings

from pricing.server import serve
from pricing.settings import PricingSettings

run(serve(load_settings(PricingSettings)))
