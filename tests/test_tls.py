"""TLS between the processes: with tls_cert/tls_key/tls_ca set, every call is mutual TLS."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from cluster_helpers import prepare_store, random_window, running_cluster, write_config
from tactical.v1 import cluster_pb2, cluster_pb2_grpc
from tactical_engine.client import TacticalClient

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


def make_certificates(directory):
    """A CA and one certificate for 127.0.0.1 that serves both ends (server and client auth)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=tactical test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=localhost")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "node.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"tls_cert": str(directory / "node.pem"), "tls_key": str(directory / "node.key"),
            "tls_ca": str(directory / "ca.pem")}


def test_a_tls_cluster_serves_tls_clients_and_refuses_plaintext(tmp_path):
    config_path = write_config(tmp_path, serving=make_certificates(tmp_path))
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path) as cluster:  # the launcher's own health checks go over TLS too
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            d = client.decide(window=random_window(1))
            assert all(v.ok for v in d.votes) and d.model_version == 1
        with grpc.insecure_channel(cluster.coordinator.address) as channel, pytest.raises(grpc.RpcError) as err:
            cluster_pb2_grpc.ClusterServiceStub(channel).GetStatus(cluster_pb2.GetStatusRequest(), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_coordinators_sharing_a_tls_port_are_reached_alone_in_plaintext_at_a_local_socket(tmp_path):
    """`tactical up --coordinators 2` with TLS: the shared port is mutual TLS; each coordinator's own address is
    a local socket in plaintext (the launcher checks each one's health there)."""
    config_path = write_config(tmp_path, serving=make_certificates(tmp_path))
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path, coordinators=2) as cluster:
        with grpc.insecure_channel(cluster.coordinator.address) as channel, pytest.raises(grpc.RpcError) as err:
            cluster_pb2_grpc.ClusterServiceStub(channel).GetStatus(cluster_pb2.GetStatusRequest(), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        for child in cluster.coordinators:
            assert child.own_address.startswith("unix-abstract:")
            with grpc.insecure_channel(child.own_address) as channel:
                status = cluster_pb2_grpc.ClusterServiceStub(channel).GetStatus(cluster_pb2.GetStatusRequest(),
                                                                                  timeout=5)
            assert status.pid == child.proc.pid and status.active_version == 1
