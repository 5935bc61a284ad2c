from svckit.server import run
from svckit.settings import load_settings
from worker.server import serve
from worker.settings import WorkerSettings

run(serve(load_settings(WorkerSettings)))
