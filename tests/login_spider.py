"""The README's login spider: logs in through a CSRF-protected form, then crawls the
pages that need the session. The session tests run it in process and as a file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from crawler import FormRequest, Request, Response, Spider


class LoginSpider(Spider):
    name = "login"
    start_urls = ["http://127.0.0.1:8000/login"]  # the tests point it elsewhere (START_URL)

    def parse(self, response: Response) -> FormRequest:
        # The login page: from_response keeps the form's hidden CSRF token and the
        # submit button's value, and posts to the form's action.
        return FormRequest.from_response(
            response,
            formcss="form#login",
            formdata={"username": "alice", "password": "open sesame"},
            callback=self.after_login,
        )

    def after_login(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        # The login answered with a redirect and the session cookie; this is its target.
        if response.css_first("form#login") is not None:
            raise ValueError("login failed")
        yield from self.private(response)

    def private(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        user = response.css_first(".user")
        yield {"url": response.url, "user": user.text() if user else None}
        for link in response.css("a.next"):
            yield response.follow(link, callback=self.private)
