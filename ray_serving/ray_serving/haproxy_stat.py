"""`python -m ray_serving.haproxy_stat`, run in a cluster's head: HAProxy's view of the
replicas from its runtime API (`show stat`: one CSV row per server, with its address and
UP/DOWN state), printed as HAProxy writes it. Serve puts the admin socket in a folder per
node. Read from the host by compose_cluster.RayCluster.ingress_servers."""

import glob
import socket

SOCKETS = "/tmp/haproxy-serve/*/admin.sock"


def main() -> None:
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(glob.glob(SOCKETS)[0])
        admin.sendall(b"show stat\n")
        out = b""
        while chunk := admin.recv(65536):
            out += chunk
    print(out.decode())


if __name__ == "__main__":
    main()
