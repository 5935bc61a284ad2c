"""HTTP emulators of the upstream provider APIs, built from docs/provider-contracts.md.

Each `<provider>.py` module has `create_app(state: EmulatorState) -> FastAPI`. The harness
(`harness.py`) serves any of them as a real HTTP server, in a thread of the test process
(`EmulatorServer`) or as a process of its own (`python -m tests.emulators <name> --port N`),
and gives tests a control surface under `/_emulator/` to inject faults and read calls.
"""
