from svckit.server import run
from svckit.settings import load_settings

from routing.server import serve
from routing.settings import RoutingSettings

run(serve(load_settings(RoutingSettings)))
