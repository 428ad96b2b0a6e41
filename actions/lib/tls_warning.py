"""The one warning a client gives when TLS certificate verification is turned off.

``requests``/urllib3 would add an ``InsecureRequestWarning`` for every request
to that host; the pack's own log line replaces it (a warnings filter for that
host's message only), so turning verification off warns once per client.
"""
import logging
import re
import warnings
from urllib.parse import urlsplit

from urllib3.exceptions import InsecureRequestWarning


def warn_unverified(log: logging.Logger, service: str, section: str, url: str) -> None:
    log.warning("TLS certificate verification is off for %s (%s.verify_tls is false)", service, section)
    host = urlsplit(url).hostname or ""
    warnings.filterwarnings("ignore", category=InsecureRequestWarning,
                            message="Unverified HTTPS request is being made to host '{}'".format(re.escape(host)))
