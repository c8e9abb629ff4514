"""Email over SMTP: STARTTLS (port 587) or implicit TLS (465), login when a username is set.

smtplib is blocking, so a send runs in a worker thread. Errors never carry the password.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

_ADDRESS = re.compile(r"^[^@\s<>,;\"']{1,64}@[A-Za-z0-9.\-]{1,253}$")


class NotificationError(Exception):
    """A notification could not be delivered (the message says why, without secrets)."""


def valid_recipients(addresses: Sequence[str] | str | None) -> list[str]:
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",")]
    out = []
    for address in addresses or []:
        if not address:
            continue
        if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
            raise NotificationError(f"{str(address)[:80]!r} is not an email address")
        out.append(address.strip())
    return list(dict.fromkeys(out))


class EmailSender:
    def __init__(self, settings: Any):
        self.settings = settings

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def build(self, recipients: Sequence[str], subject: str, text: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from_email
        message["To"] = ", ".join(recipients)
        message["Subject"] = " ".join(subject.split())[:250]
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="convergence")
        message.set_content(text)
        return message

    async def send(self, recipients: Sequence[str], subject: str, text: str) -> None:
        if not self.configured:
            raise NotificationError("no SMTP server configured (SMTP_HOST)")
        if not recipients:
            raise NotificationError("no recipients")
        message = self.build(recipients, subject, text)
        await asyncio.to_thread(self._send, message)

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.smtp_ca_file:
            context.load_verify_locations(cafile=str(self.settings.smtp_ca_file))
        return context

    def _send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            if s.smtp_use_ssl:
                server: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds,
                                                        context=self._context())
            else:
                server = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            with server:
                server.ehlo()
                if s.smtp_use_tls and not s.smtp_use_ssl:
                    server.starttls(context=self._context())
                    server.ehlo()
                if s.smtp_username:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    server.login(s.smtp_username, password)
                refused = server.send_message(message)
            if refused:
                raise NotificationError(f"the SMTP server refused {len(refused)} recipient(s): {sorted(refused)}")
        except smtplib.SMTPAuthenticationError as error:
            raise NotificationError(f"SMTP login refused ({error.smtp_code})") from None
        except smtplib.SMTPNotSupportedError:
            raise NotificationError("the SMTP server does not offer STARTTLS (set SMTP_USE_TLS=false only "
                                    "for a trusted local relay)") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
            raise NotificationError(f"SMTP delivery to {s.smtp_host}:{s.smtp_port} failed: "
                                    f"{type(error).__name__}: {str(error)[:200]}") from None
