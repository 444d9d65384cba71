"""Run user_svc: `python -m user_svc`."""

from user_svc.server import main

if __name__ == "__main__":
    main()
