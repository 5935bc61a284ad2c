import asyncio

from svckit.settings import load_settings
from worker.server import serve
from worker.settings import WorkerSettings

asyncio.run(serve(load_settings(WorkerSettings)))
