"""Which datasets this machine has, for tests that skip without them."""

from __future__ import annotations

import functools

from lrfree.bench.data import DataMissing, load_fashion_mnist


@functools.cache
def fmnist_available() -> bool:
    """Fashion-MNIST is installed (Debian's dataset-fashion-mnist) or cached."""
    try:
        load_fashion_mnist(train_subset=1)
        return True
    except DataMissing:
        return False
