from edge.server import serve
from edge.settings import EdgeSettings
from svckit.server import run
from svckit.settings import load_settings

run(serve(load_settings(EdgeSettings)))
