"""Run storage_svc: `python -m storage_svc`."""

from storage_svc.server import main

if __name__ == "__main__":
    main()
