from tests.emulators.harness import main

main()
