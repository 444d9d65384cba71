"""Run data_access: `python -m data_access`."""

from data_access.server import main

if __name__ == "__main__":
    main()
