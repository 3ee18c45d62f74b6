"""Test certificates, made with `cryptography` (moto_server's own dependency): a CA, server
certificates for 127.0.0.1/localhost, client certificates with a chosen subject. Files are PEM.
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ATTRS = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME,
          "C": NameOID.COUNTRY_NAME, "L": NameOID.LOCALITY_NAME}


def _name(subject):
    """[("CN", "alice"), ("O", "Example")] -> a Name whose RFC 2253 form lists CN first."""
    return x509.Name([x509.NameAttribute(_ATTRS[k], v) for k, v in reversed(subject)])


def _write(path, key, cert):
    with open(path + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(path + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path + ".pem", path + ".key"


class CA:
    def __init__(self, directory, name="test-ca"):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = _name([("CN", name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem, _ = _write(os.path.join(directory, name), self.key, self.cert)

    def issue(self, file_name, subject, server=False):
        """A certificate signed by this CA; returns (cert.pem, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return _write(os.path.join(self.dir, file_name), key, b.sign(self.key, hashes.SHA256()))


def subject_cn(pem_or_der):
    """The common name of a certificate (PEM text or DER bytes)."""
    cert = x509.load_der_x509_certificate(pem_or_der) if isinstance(pem_or_der, bytes) and not pem_or_der.startswith(b"-----") \
        else x509.load_pem_x509_certificate(pem_or_der if isinstance(pem_or_der, bytes) else pem_or_der.encode())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
