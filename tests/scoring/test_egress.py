"""Where an organization's LLM endpoint may connect (scoring/scorers/egress.py): public addresses
and SCORING_LLM_ALLOWED_NETWORKS only, checked when the endpoint is saved and on every connection,
against the address connected to. The endpoint from the environment is not checked.

The test settings allow 127.0.0.0/8 (the fake LLM server listens there); these tests set the
setting themselves. Name resolution is replaced only where a public name is needed (no DNS here).
"""

import datetime
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from django.test import override_settings

from scoring import scorers
from scoring.models import LLMEndpoint
from scoring.scorers import egress
from tests.support.fake_openai import fake_openai, no_endpoint_in_the_environment  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_endpoint_in_the_environment")]

FACTUALITY = {"type": "global", "name": "Factuality"}
SPAN = {"input": "What is the capital of France?", "output": "Paris", "expected": "Paris", "metadata": {}}
LOOPBACK = override_settings(SCORING_LLM_ALLOWED_NETWORKS=["127.0.0.0/8"])
NOTHING = override_settings(SCORING_LLM_ALLOWED_NETWORKS=[])


def endpoint_put(api, base_url):
    body = {"base_url": base_url, "api_key": "sk-org", "default_model": "fake-judge"}
    return api.client.put("/v1/llm_endpoint", json.dumps(body), content_type="application/json")


# --- Which addresses --------------------------------------------------------------------


@NOTHING
@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1",
     "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
     # IPv6 that leads to a private IPv4 address (NAT64, 6to4, IPv4-compatible), and NAT64's
     # local-use prefix, where the network decides what it leads to.
     "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.5", "2002:a00:5::1", "::10.0.0.5", "64:ff9b:1::808:808"],
)  # fmt: skip
def test_loopback_private_link_local_and_shared_addresses_are_refused(host):
    with pytest.raises(egress.BlockedAddress, match="not on a public address.*SCORING_LLM_ALLOWED_NETWORKS"):
        egress.address(host, 443)


@NOTHING
@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_are_allowed(host):
    assert egress.address(host, 443) == host


@override_settings(SCORING_LLM_ALLOWED_NETWORKS=["10.1.2.0/24", "fd00::/8"])
def test_the_operators_networks_are_allowed_and_only_those():
    assert egress.address("10.1.2.3", 443) == "10.1.2.3"
    assert egress.address("fd00::1", 443) == "fd00::1"
    assert egress.address("64:ff9b::a01:203", 443) == "64:ff9b::a01:203"  # 10.1.2.3 through NAT64
    for host in ("10.1.3.3", "64:ff9b::a01:303"):
        with pytest.raises(egress.BlockedAddress):
            egress.address(host, 443)


@NOTHING
def test_a_name_connects_to_its_first_allowed_address_and_is_refused_if_none_is(monkeypatch, caplog):
    answers = {
        "mixed.example": ["10.0.0.7", "93.184.215.14"],
        "internal.example": ["10.0.0.7", "169.254.169.254"],
    }
    monkeypatch.setattr(
        socket, "getaddrinfo",
        lambda host, port, **kw: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]],
    )  # fmt: skip
    assert egress.address("mixed.example", 443) == "93.184.215.14"
    with pytest.raises(
        egress.BlockedAddress, match=r"internal\.example is not on a public address"
    ) as refused:
        egress.address("internal.example", 443)
    # The addresses are the operator's to read, in the log; the caller does not learn them.
    assert "10.0.0.7" not in str(refused.value)
    assert "internal.example refused: it resolves to 10.0.0.7, 169.254.169.254." in caplog.text


def test_a_bad_network_in_the_environment_stops_the_server_with_the_settings_name(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from onlinescore.settings.base import _networks

    monkeypatch.setenv("SCORING_LLM_ALLOWED_NETWORKS", "10.0.0.0/8, 127.0.0.1 ,")
    assert _networks("SCORING_LLM_ALLOWED_NETWORKS") == ["10.0.0.0/8", "127.0.0.1/32"]
    monkeypatch.setenv("SCORING_LLM_ALLOWED_NETWORKS", "10.0.0.0/8,intranet")
    with pytest.raises(ImproperlyConfigured, match="SCORING_LLM_ALLOWED_NETWORKS: 'intranet'"):
        _networks("SCORING_LLM_ALLOWED_NETWORKS")


# --- When the endpoint is saved ---------------------------------------------------------


@NOTHING
@pytest.mark.parametrize(
    "base_url",
    ["http://169.254.169.254/latest", "http://localhost:11434/v1", "https://[::1]/v1", "http://10.0.0.1/v1"],
)
def test_an_endpoint_on_a_refused_address_is_a_400_on_base_url_and_nothing_is_saved(owner, org, base_url):
    response = endpoint_put(owner, base_url)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "base_url"
    assert (
        "not on a public address" in error["message"] and "SCORING_LLM_ALLOWED_NETWORKS" in error["message"]
    )
    assert not LLMEndpoint.objects.filter(organization=org).exists()


@NOTHING
def test_a_refused_address_leaves_the_saved_endpoint_as_it_was(owner, org):
    assert endpoint_put(owner, "https://8.8.8.8/v1").status_code == 200
    assert endpoint_put(owner, "http://127.0.0.1:8000/v1").status_code == 400
    assert LLMEndpoint.objects.get(organization=org).base_url == "https://8.8.8.8/v1"


@NOTHING
def test_a_host_that_does_not_resolve_here_is_saved(owner, org):
    # The workers may resolve it; a call that cannot connect then errors with its own message.
    assert endpoint_put(owner, "https://llm.invalid/v1").status_code == 200


@LOOPBACK
def test_an_allowed_network_can_be_saved(owner, org):
    assert endpoint_put(owner, "http://localhost:11434/v1").status_code == 200


@NOTHING
def test_the_admin_form_refuses_the_same_addresses_with_the_same_message(admin_client, org):
    response = admin_client.post(
        "/admin/scoring/llmendpoint/add/",
        {
            "organization": org.pk,
            "base_url": "http://169.254.169.254/v1",
            "default_model": "m",
            "api_key": "k",
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert "not on a public address" in response.content.decode()
    assert not LLMEndpoint.objects.exists()


# --- On every connection ----------------------------------------------------------------


def test_a_name_that_resolves_elsewhere_after_saving_is_refused_at_connection(owner, org, fake_openai):  # noqa: F811
    """DNS rebinding: saved while its address was allowed, the endpoint is refused when its name
    later leads to a refused address. The run errors for good (no retry), saying why, and
    nothing reaches the server."""
    with LOOPBACK:
        assert endpoint_put(owner, f"http://localhost:{fake_openai.port}/v1").status_code == 200
    with NOTHING:
        outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert not outcome.transient
    assert "localhost is not on a public address" in outcome.error
    assert fake_openai.requests == []


@LOOPBACK
def test_a_name_is_connected_to_by_its_checked_address_and_keeps_its_host_header(owner, org, fake_openai):  # noqa: F811
    assert endpoint_put(owner, f"http://localhost:{fake_openai.port}/v1").status_code == 200
    outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert outcome.error is None, outcome.error
    assert [r.headers["host"] for r in fake_openai.requests] == [f"localhost:{fake_openai.port}"]


@LOOPBACK
def test_an_organizations_endpoint_is_called_directly_not_through_the_environments_proxy(
    owner,
    org,
    fake_openai,  # noqa: F811
    monkeypatch,
):
    """The check must see the address connected to; a proxy would connect in its place."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert endpoint_put(owner, fake_openai.url).status_code == 200
    outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert outcome.error is None, outcome.error
    assert len(fake_openai.requests) == 1


@NOTHING
def test_the_environments_endpoint_is_the_operators_and_is_not_checked(org, fake_openai, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert outcome.error is None, outcome.error
    assert len(fake_openai.requests) == 1


@LOOPBACK
def test_a_redirect_is_not_followed(owner, org, fake_openai):  # noqa: F811
    """A transport pools connections by address, so it must serve one host: a redirect, which
    could lead to another, ends the call instead."""
    with _Server(_redirect_to(fake_openai.url + "/chat/completions")) as server:
        assert endpoint_put(owner, f"http://127.0.0.1:{server.port}/v1").status_code == 200
        outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert "answered 307" in outcome.error
    assert fake_openai.requests == []


# --- TLS to the checked address ---------------------------------------------------------


@LOOPBACK
def test_tls_to_the_address_still_sends_the_name_and_checks_the_certificate_against_it(tmp_path):
    """Connecting to the address keeps TLS on the name: the server sees it as SNI, and a
    certificate for another name is refused."""
    trusted = ssl.create_default_context()
    for name in ("localhost", "other.example"):
        cert, key = _self_signed(tmp_path, name)
        trusted.load_verify_locations(cert)
        with _Server(_ok, tls=(cert, key)) as server:
            with httpx2.Client(transport=egress.CheckedTransport(verify=trusted)) as client:
                if name == "localhost":
                    response = client.get(f"https://localhost:{server.port}/v1/models")
                    assert response.status_code == 200
                    assert server.names == ["localhost"]
                    assert response.request.url.host == "localhost"
                else:
                    with pytest.raises(httpx2.ConnectError, match="certificate|hostname"):
                        client.get(f"https://localhost:{server.port}/v1/models")


def _self_signed(directory, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def _ok(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"{}")


def _redirect_to(url):
    def answer(handler):
        length = int(handler.headers.get("Content-Length") or 0)
        handler.rfile.read(length)
        handler.send_response(307)
        handler.send_header("Location", url)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


class _Server:
    """A one-answer HTTP(S) server on 127.0.0.1; with TLS, it records the SNI names it gets."""

    def __init__(self, answer, tls=None):
        self.names = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                answer(self)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            context.sni_callback = lambda sock, name, ctx: self.names.append(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def __enter__(self):
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
