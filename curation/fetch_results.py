"""Turning img2dataset's per-URL outcome into vilactl's failure reasons.

img2dataset reports a status (success, failed_to_download, failed_to_resize) and the text of the
exception. vilactl counts failures under stable reason names so that catalog SQL can group them:

  http_<code>       an HTTP error status (http_404, http_500, …)
  timeout           the server did not answer within the timeout
  incomplete_read   the body ended before its Content-Length (truncated transfer)
  decode_error      the bytes were not a decodable image
  too_large         more pixels than the limit (never decoded)
  aspect_ratio      long side more than 100 × the short one (VILACTL_MAX_ASPECT_RATIO; never
                    decoded; curation/images.py)
  opt_out           X-Robots-Tag forbids AI use (noai, noimageai, …)
  rejected_url      refused (scheme, a private address — also after DNS or a redirect;
                    see netpolicy.py and curation/safe_http.py)
  connection_error  refused or reset connections, DNS failures
  other             anything else (the raw message is kept beside the reason)

`TRANSIENT` reasons are the ones `--retry-failed` re-attempts.
"""
from __future__ import annotations

import re

TRANSIENT = frozenset({"timeout", "incomplete_read", "connection_error", "http_429", "http_500",
                       "http_502", "http_503", "http_504"})

_HTTP = re.compile(r"HTTP Error (\d{3})")


def failure_reason(status: str | None, error: str | None) -> str | None:
    """The reason for one img2dataset result row, or None for a success."""
    if status == "success":
        return None
    msg = error or ""
    if "image area too large" in msg:
        return "too_large"
    if "aspect ratio" in msg:
        return "aspect_ratio"
    if status == "failed_to_resize":
        return "decode_error"
    if "vilactl refused" in msg:
        return "rejected_url"
    if m := _HTTP.search(msg):
        return f"http_{m.group(1)}"
    low = msg.lower()
    if "x-robots-tag" in low:
        return "opt_out"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    if "incompleteread" in low or "incomplete read" in low:
        return "incomplete_read"
    if any(s in low for s in ("connection refused", "connection reset", "name or service",
                              "remote end closed", "nodename nor servname", "urlopen error")):
        return "connection_error"
    return "other"


def is_transient(reason: str) -> bool:
    return reason in TRANSIENT or (reason.startswith("http_5"))
