from svckit.server import run
from svckit.settings import load_settings

from edge.server import serve
from edge.settings import EdgeSettings

run(serve(load_settings(EdgeSettings)))
