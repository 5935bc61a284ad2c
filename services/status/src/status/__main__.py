from status.server import serve
from status.settings import StatusSettings
from svckit.server import run
from svckit.settings import load_settings

run(serve(load_settings(StatusSettings)))
