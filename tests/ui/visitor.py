"""A cookie-keeping HTTP visitor of the UI, for what a browser hides: headers,
cookie flags, forged posts, replayed cookies."""
from __future__ import annotations

import re
import ssl
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from tests.registry.conftest import Client, Resp

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
_CSRF_RE = re.compile(r'name="(csrf[^"]*)" value="([^"]*)"')


class Visitor:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None):
        self.http = Client("127.0.0.1", port, tls=tls)
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []  # every Set-Cookie header seen

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None) -> Resp:
        h = {"Accept": BROWSER_ACCEPT, **(headers or {})}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        r = self.http.request(method, path, body=body, headers=h)
        for raw in r.headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(raw)
            for name, morsel in SimpleCookie(raw).items():
                if morsel["max-age"] == "0" or not morsel.value or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return r

    def get(self, path: str, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def page(self, path: str) -> str:
        r = self.get(path)
        assert r.status == 200, (path, r.status, r.body[:500])
        return r.body.decode()

    def csrf(self, path: str = "/ui/login") -> tuple[str, str]:
        """(field name, token) of the forms on `path`."""
        m = _CSRF_RE.search(self.page(path))
        assert m, f"no CSRF field on {path}"
        return m.group(1), m.group(2)

    def login(self, user: str, password: str) -> Resp:
        name, token = self.csrf("/ui/login")
        return self.request("POST", "/ui/login", form={name: token, "username": user, "password": password,
                                                         "next": "/ui/"})

    def close(self) -> None:
        self.http.close()
