"""The TLS layer of a port: client contexts for probing, and what the handshake revealed.

Probing must talk to any server (self-signed, expired, old protocol versions), so nothing
is verified; the certificate is read from its DER bytes, since `getpeercert()` is empty
when verification is off.
"""

from __future__ import annotations

import ssl
import warnings

from portkit.model.services import TlsInfo

ALPN_OFFER = ["h2", "http/1.1"]


def client_context(*, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A context that completes a handshake with any server and verifies nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        # Old servers (TLS 1.0, weak ciphers) must still be recognised, not refused.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _name(name: object) -> str:
    from cryptography import x509

    assert isinstance(name, x509.Name)
    return name.rfc4514_string()


def describe_certificate(der: bytes) -> tuple[str, tuple[str, ...], str, str, str]:
    """(subject, SANs, issuer, not_after, not_before) of a DER certificate; times in ISO 8601."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "", (), "", "", ""
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans.extend(f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName))
        sans.extend(f"IP:{n}" for n in ext.get_values_for_type(x509.IPAddress))
        sans.extend(f"email:{n}" for n in ext.get_values_for_type(x509.RFC822Name))
        sans.extend(f"URI:{n}" for n in ext.get_values_for_type(x509.UniformResourceIdentifier))
    except (x509.ExtensionNotFound, ValueError):
        pass
    not_after = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    not_before = cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _name(cert.subject), tuple(sans), _name(cert.issuer), not_after, not_before


def describe_session(tls: ssl.SSLObject | ssl.SSLSocket) -> TlsInfo:
    """The negotiated version, cipher and ALPN, and the server certificate, of a live session."""
    cipher = tls.cipher()
    der = tls.getpeercert(binary_form=True)
    subject, sans, issuer, not_after, not_before = describe_certificate(der) if der else ("", (), "", "", "")
    return TlsInfo(
        version=tls.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=tls.selected_alpn_protocol() or "",
        subject=subject,
        sans=sans,
        issuer=issuer,
        not_after=not_after,
        not_before=not_before,
    )
