"""HTTPS with the broker's certificate (the same Tls every TLS listener uses)."""

import trustme

from conftest import Api, start_broker


def test_https_listener(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        with open(cert_file, "ab") as f:
            f.write(pem.bytes())
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    b = start_broker(extra_args=["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)])
    try:
        assert b.https_port
        api = Api(f"https://127.0.0.1:{b.https_port}", verify=str(ca_file))
        assert api.ok("GET", "/api/whoami")["name"] == "guest"
        assert api.get("/api/overview", auth=None).status_code == 401
        protocols = {l["protocol"] for l in api.ok("GET", "/api/overview")["listeners"]}
        assert {"https", "http", "amqp/ssl"} <= protocols
        # Plain HTTP on the HTTP port still works.
        assert Api(b.http_url).ok("GET", "/api/whoami")["name"] == "guest"
    finally:
        b.cleanup()
