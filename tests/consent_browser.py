"""A stand-in for the person at the browser, for tests of ``codemode connect``.

Called with an authorization URL (as ``webbrowser`` calls the program named by ``$BROWSER``, or
by a test that read the URL from the bridge's stderr), it signs in to the portal through the real
login form, answers the real consent form, and follows the redirect to the bridge's loopback
listener, over plain HTTP. Environment:

* ``CONSENT_USER`` / ``CONSENT_PASSWORD``: the portal account;
* ``CONSENT_DECISION``: ``approve`` (default), ``deny``, or ``ignore`` (never answer);
* ``CONSENT_UNCHECK``: scopes to untick, space-separated;
* ``CONSENT_LOG``: a file that gets one JSON line per run (what happened), for the test to read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from portal_harness import form_fields, forms, post_form


def consent(url: str, env: dict[str, str], *, follow_callback: bool = True) -> dict[str, object]:
    decision = env.get("CONSENT_DECISION", "approve")
    record: dict[str, object] = {"url": url, "decision": decision}
    if decision == "ignore":
        return record
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    with httpx.Client(base_url=base, trust_env=False, follow_redirects=False, timeout=60) as http:
        r = http.get(url)
        if r.status_code == 303 and r.headers["location"].startswith("/login"):
            page = http.get("/login")
            csrf = dict(form_fields(forms(page.text)[-1]))["csrf"]
            signed = http.post("/login", data={"username": env["CONSENT_USER"], "password": env["CONSENT_PASSWORD"],
                                               "csrf": csrf, "next": "/account"})  # fmt: skip
            record["login"] = signed.status_code
            r = http.get(url)
        record["consent_page"] = r.status_code
        if r.status_code != 200:
            record["page"] = r.text[:500]
            return record
        form = next(f for f in forms(r.text) if f["action"] == "/authorize")
        uncheck = set(env.get("CONSENT_UNCHECK", "").split())
        fields = [(k, v) for k, v in form_fields(form) if not (k == "grant_scope" and v in uncheck)]
        record["scopes"] = [v for k, v in fields if k == "grant_scope"]
        fields.append(("decision", "approve" if decision == "approve" else "deny"))
        answer = post_form(http, "/authorize", fields)
        record["answer"] = answer.status_code
        location = answer.headers.get("location", "")
        record["redirect"] = location.split("?", 1)[0]
        record["location"] = location
        if follow_callback and answer.status_code == 302 and location.startswith("http://127.0.0.1:"):
            callback = http.get(location)  # the bridge's loopback listener
            record["callback"] = callback.status_code
    return record


def main() -> int:
    env = dict(os.environ)
    record = consent(sys.argv[1], env)
    if env.get("CONSENT_LOG"):
        with open(env["CONSENT_LOG"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
