#!/bin/sh
# Kubernetes exec probe on grpc.health.v1 over mutual TLS (installed as /usr/local/bin/tactical-probe).
# The kubelet's native grpc probe speaks plaintext only, so it cannot reach a TLS cluster.
#
#   tactical-probe ready|live PORT SERVICE SERVER_NAME
#
# ready: exit 0 only when SERVICE is SERVING.
# live:  exit 0 when the server answers the health check at all, SERVING or NOT_SERVING: an agent waiting
#        for its first version, or a coordinator whose agents are down, is alive and must not be restarted.
# The TLS files are the ones serving.tls_ca/tls_cert/tls_key name in the ConfigMap.
# SERVER_NAME is the name the certificate is checked against (the pod's Service), as real clients dial it.
set -u
if [ "$#" -ne 4 ] || { [ "$1" != ready ] && [ "$1" != live ]; }; then
    echo "usage: tactical-probe ready|live PORT SERVICE SERVER_NAME" >&2
    exit 64
fi
grpc_health_probe -addr="127.0.0.1:$2" -service="$3" -connect-timeout=2s -rpc-timeout=2s \
    -tls -tls-ca-cert=/etc/tactical/tls/ca.crt \
    -tls-client-cert=/etc/tactical/tls/tls.crt -tls-client-key=/etc/tactical/tls/tls.key \
    -tls-server-name="$4"
status=$?
# grpc_health_probe exits 4 when the server answered with a status other than SERVING.
if [ "$1" = live ] && [ "$status" -eq 4 ]; then
    exit 0
fi
exit "$status"
