"""`python -m storage`: run the storage service until SIGTERM."""

from storage.server import main

main()
