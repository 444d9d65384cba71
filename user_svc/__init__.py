"""user_svc: profiles, the caller's own and anyone's by username."""
