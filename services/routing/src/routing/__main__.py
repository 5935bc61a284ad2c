from routing.server import serve
from routing.settings import RoutingSettings
from svckit.server import run
from svckit.settings import load_settings

run(serve(load_settings(RoutingSettings)))
