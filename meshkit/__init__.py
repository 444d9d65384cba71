"""Shared plumbing of the meshgram services: errors, logs, settings, server and clients."""
