"""SignBART sweeps on Ray: keypoints -> LOSO trials -> quantized TFLite -> reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("signbart")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
