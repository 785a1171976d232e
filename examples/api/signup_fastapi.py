"""A FastAPI signup view that verifies the address first: rejects ``invalid``, flags
``risky``, and lets ``unknown`` through (a slow mail server is not the user's fault).

    MAILSIFT_API_URL=http://127.0.0.1:8080 MAILSIFT_API_KEY=ms_live_... \\
        uvicorn examples.api.signup_fastapi:app
"""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

__all__ = ["create_app"]


class Signup(BaseModel):
    email: str
    name: str = ""


def create_app(base_url: str | None = None, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="signup")
    base = (base_url or os.environ.get("MAILSIFT_API_URL", "http://127.0.0.1:8080")).rstrip("/")
    key = api_key or os.environ.get("MAILSIFT_API_KEY", "")
    app.state.accounts = {}

    async def verify(email: str) -> dict:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=8) as client:
            try:
                response = await client.post("/api/v1/verify", json={"email": email}, params={"timeout": 3})
                response.raise_for_status()
                return response.json()
            except httpx.HTTPError:
                return {"status": "unknown", "reason": "verifier_unreachable"}  # never block on our outage

    @app.post("/signup", status_code=201)
    async def signup(form: Signup) -> dict:
        result = await verify(form.email)
        if result["status"] == "invalid":
            hint = f" Did you mean {result['suggestion']}?" if result.get("suggestion") else ""
            raise HTTPException(422, f"This email address cannot receive mail.{hint}")
        account = {"email": form.email, "needs_review": result["status"] == "risky",
                   "email_status": result["status"]}
        app.state.accounts[form.email] = account
        return account

    return app


app = create_app()
