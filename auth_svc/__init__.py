"""auth_svc: accounts and credentials (register, login, refresh, logout) and the JWKS."""
