from pricing.server import serve
from pricing.settings import PricingSettings
from svckit.server import run
from svckit.settings import load_settings

run(serve(load_settings(PricingSettings)))
