"""A tiny trainer setting (as train() keywords and as the same CLI flags), and the environment of
a trainer subprocess."""
import os
import socket

TINY = dict(widths=(8, 16, 16), hidden_dim=32, bottleneck_dim=16, out_dim=64, train_per_class=8,
            test_per_class=4, batch_size=16, local_crops=2, knn_every=1, progress=False)
TINY_FLAGS = ["--widths", "8", "16", "16", "--hidden-dim", "32", "--bottleneck-dim", "16",
              "--out-dim", "64", "--train-per-class", "8", "--test-per-class", "4",
              "--batch-size", "16", "--local-crops", "2", "--knn-every", "1"]


def free_port():
    """ a TCP port on loopback that nothing listens on now """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env():
    """ one thread per process, gloo on loopback, and no WORLD_SIZE inherited from a launcher """
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    env.pop("WORLD_SIZE", None)
    return env
