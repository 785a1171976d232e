"""Receive mailsift's per-address webhooks in Flask.

Submit a job with ``"webhook_url": "https://your.app/webhooks/mailsift"`` and the same
``webhook_secret`` as ``MAILSIFT_WEBHOOK_SECRET`` here. Each result arrives as one POST;
check the signature over the raw body *before* parsing it. Answer 2xx once it is handled:
anything else (or no answer) is retried after 1, 2, 4 and 8 minutes. The
``X-Mailsift-Delivery`` header is the same on every retry of one result: use it to
ignore a repeat.

    MAILSIFT_WEBHOOK_SECRET=... flask --app examples/api/webhook_receiver_flask.py run
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, abort, request

__all__ = ["create_app"]


def create_app(secret: str | None = None) -> Flask:
    app = Flask(__name__)
    key = (secret or os.environ["MAILSIFT_WEBHOOK_SECRET"]).encode()
    app.config["RESULTS"] = {}  # email -> status; use your database

    @app.post("/webhooks/mailsift")
    def mailsift_webhook():
        signature = request.headers.get("X-Webhook-Signature", "")
        expected = hmac.new(key, request.get_data(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            abort(401)
        data = request.get_json()
        app.config["RESULTS"][data["email"]] = data["status"]
        if data["status"] == "invalid":
            pass  # e.g. mark the contact undeliverable in your CRM
        return "", 204

    return app


app = create_app() if os.environ.get("MAILSIFT_WEBHOOK_SECRET") else None
