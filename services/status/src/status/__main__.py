from svckit.server import run
from svckit.settings import load_settings

from status.server import serve
from status.settings import StatusSettings

run(serve(load_settings(StatusSettings)))
