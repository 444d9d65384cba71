"""Run auth_svc: `python -m auth_svc`."""

from auth_svc.server import main

if __name__ == "__main__":
    main()
