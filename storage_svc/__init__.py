"""storage_svc: image upload, metadata, download and avatar choice."""
