"""Mail that auth_svc sends: rendered from templates (messages), sealed before it is queued in
data_access's outbox (sealing), composed for the account flows (mailer), and delivered over SMTP
(smtp) by one sender loop across the replicas, the one holding the sending lease (sender,
outbox, outbox_client). build_mail wires it all from the settings (wiring)."""

from auth_svc.mail.wiring import Mail, build_mail

__all__ = ["Mail", "build_mail"]
