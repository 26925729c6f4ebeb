"""Data sets for training and evaluation: scikit-learn's bundled digits, and CIFAR-10 from the user's disk.

A :class:`Dataset` holds raw images (as the data set stores them: digits pixels 0…16, CIFAR-10 bytes
0…255), labels, and the number formats that map raw values to the float input (``raw · input_scale``)
and the integer input (``floor(raw · input_gain + 0.5)``) of a model (see :mod:`insitu.golden.network`).
"""

import os
import pickle
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

__all__ = ["Dataset", "DatasetError", "digits", "cifar10", "load", "CIFAR10_URL"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class DatasetError(InputError):
    """A data set that cannot be read (missing directory, corrupt batch)."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    formats: dict
    split: str = ""
    classes: int = 10
    extra: dict = field(default_factory=dict)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def meta(self):
        return {"name": self.name, "split": self.split}


def digits():
    """scikit-learn's bundled 8×8 digits, split 80/20 (``train_test_split(random_state=0, stratify=y)``)."""
    from .network import FORMATS, digits_split
    xtr, ytr, xte, yte = digits_split()
    return Dataset("sklearn digits", xtr, ytr, xte, yte, dict(FORMATS),
                   "train_test_split(test_size=0.2, random_state=0, stratify=y)")


def _batch(path):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except OSError as error:
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {error.strerror}") from None
    except Exception as error:     # pickle raises many kinds on a corrupt file
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),) or \
            (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (data must be (n, 3072) bytes, labels 0..9)")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10(path):
    """CIFAR-10 from the standard python-pickle directory (``cifar-10-batches-py``: ``data_batch_1`` … ``5``
    and ``test_batch``). Raw values are bytes; the float input is ``raw / 255``, the integer input
    ``raw · 127/255`` rounded."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DatasetError(f"CIFAR-10 directory {path} does not exist; download {CIFAR10_URL} and unpack it "
                           f"(it holds cifar-10-batches-py)")
    if os.path.isdir(os.path.join(path, "cifar-10-batches-py")):
        path = os.path.join(path, "cifar-10-batches-py")
    train = sorted(n for n in os.listdir(path) if n.startswith("data_batch_"))
    if not train or not os.path.exists(os.path.join(path, "test_batch")):
        raise DatasetError(f"{path} is not a CIFAR-10 python directory (no data_batch_* and test_batch); "
                           f"download {CIFAR10_URL}")
    parts = [_batch(os.path.join(path, n)) for n in train]
    xte, yte = _batch(os.path.join(path, "test_batch"))
    return Dataset("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   xte, yte, {"input_scale": 1 / 255, "input_gain": 127 / 255, "act_width": 8},
                   "data_batch_* / test_batch")


def load(spec):
    """A data set by name: ``digits`` or ``cifar10:PATH``."""
    name, _, path = str(spec).partition(":")
    if name == "digits" and not path:
        return digits()
    if name == "cifar10":
        if not path:
            raise DatasetError(f"cifar10 needs a directory: --data cifar10:PATH (download {CIFAR10_URL})")
        return cifar10(path)
    raise DatasetError(f"Unknown data set {spec!r}; choose digits or cifar10:PATH")
