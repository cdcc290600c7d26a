"""Forms: FormRequest, a Request whose body (or query) is form fields, and
`FormRequest.from_response`, which fills in a page's form as a browser submits it.

Scrapy's names and meaning: the form's own fields are kept (hidden ones, such as CSRF
tokens, included), `formdata` overrides and extends them (a None value removes a field),
the first submit button counts as clicked (`clickdata` picks another, `dont_click=True`
none), the method and action are the form's (GET and the page's URL by default). As a
browser does, disabled fields are left out, a checked checkbox without a value sends "on",
and a GET form's fields replace the query of its action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from selectolax.lexbor import LexborNode

from crawler.errors import FormNotFound
from crawler.http import Callback, Request, Response

FormData = Mapping[str, str | list[str] | None] | Iterable[tuple[str, str]]
_FORM_TYPE = "application/x-www-form-urlencoded"
_NOT_SENT = frozenset({"submit", "image", "reset", "button", "file"})
_CLICKABLE = "input[type=submit i], input[type=image i], button:not([type]), button[type=submit i]"


class FormRequest(Request):
    """A Request that sends `formdata`: as the urlencoded body of a POST (the method
    when formdata is given and no method is), or appended to the URL's query for a GET."""

    __slots__ = ()

    def __init__(
        self,
        url: str,
        callback: Callback | None = None,
        method: str | None = None,
        formdata: FormData | None = None,
        **kwargs: Any,
    ) -> None:
        if formdata is None:
            super().__init__(url, callback, method or "GET", **kwargs)
            return
        method = (method or "POST").upper()
        query = encode(_pairs(formdata))
        if method == "POST":
            kwargs["body"] = query.encode("ascii")
            kwargs["headers"] = _with_form_type(kwargs.get("headers"))
        elif query:
            url = url.partition("#")[0]
            url += ("&" if "?" in url else "?") + query
        super().__init__(url, callback, method, **kwargs)

    @classmethod
    def from_response(
        cls,
        response: Response,
        formdata: FormData | None = None,
        formcss: str | None = None,
        formname: str | None = None,
        formid: str | None = None,
        formnumber: int = 0,
        clickdata: Mapping[str, Any] | None = None,
        dont_click: bool = False,
        method: str | None = None,
        **kwargs: Any,
    ) -> FormRequest:
        """A request that submits a form of `response`: the one `formcss` selects (or that
        holds what it selects), else the one named `formname` or with id `formid`, else
        the `formnumber`th (the first). FormNotFound if there is no such form. Other
        keywords are Request's (`callback`, `meta`, `dont_filter`, `headers`, `url`...)."""
        form = find_form(response, formcss, formname, formid, formnumber)
        given = _pairs(formdata) if formdata is not None else []
        overridden = {name for name, _ in given}
        if isinstance(formdata, Mapping):
            overridden |= {name for name, value in formdata.items() if value is None}
        pairs = [(name, value) for name, value in form_fields(form) if name not in overridden]
        if not dont_click:
            clicked = _clicked(form, clickdata)
            if clicked is not None and clicked[0] not in overridden:
                pairs.append(clicked)
        pairs.extend(given)
        action = (form.attributes.get("action") or "").strip()
        url = response.urljoin(action) if action else response.url.partition("#")[0]
        url = kwargs.pop("url", None) or url  # Scrapy's: another URL than the action
        chosen = (method or form.attributes.get("method") or "GET").strip().upper()
        if chosen not in ("GET", "POST"):
            chosen = "GET"  # as browsers treat an unknown method
        query = encode(pairs, response.encoding)
        if chosen == "POST":
            kwargs["headers"] = _with_form_type(kwargs.get("headers"))
            return cls(url, method="POST", body=query.encode("ascii"), **kwargs)
        url = urlunsplit(urlsplit(url)._replace(query=query, fragment=""))
        return cls(url, method="GET", **kwargs)


def find_form(
    response: Response,
    formcss: str | None = None,
    formname: str | None = None,
    formid: str | None = None,
    formnumber: int = 0,
) -> LexborNode:
    """The form `FormRequest.from_response` fills in; FormNotFound if there is none."""
    forms = response.css("form")
    if not forms:
        raise FormNotFound(f"no <form> on {response.url}")
    for attribute, wanted in (("name", formname), ("id", formid)):
        if wanted is not None:
            for form in forms:
                if form.attributes.get(attribute) == wanted:
                    return form
    if formcss is not None:
        for node in response.css(formcss):
            found: LexborNode | None = node
            while found is not None and found.tag != "form":
                found = found.parent
            if found is not None:
                return found
        raise FormNotFound(f"no <form> matches {formcss!r} on {response.url}")
    if not 0 <= formnumber < len(forms):
        raise FormNotFound(f"no form number {formnumber} on {response.url} ({len(forms)} forms)")
    return forms[formnumber]


def form_fields(form: LexborNode) -> list[tuple[str, str]]:
    """The (name, value) pairs a browser sends for `form` before any button is clicked."""
    pairs: list[tuple[str, str]] = []
    for node in form.css("input, select, textarea"):
        attributes = node.attributes
        name = attributes.get("name")
        if not name or "disabled" in attributes:
            continue
        if node.tag == "select":
            pairs.extend((name, value) for value in _selected(node))
        elif node.tag == "textarea":
            pairs.append((name, node.text(deep=True)))
        else:
            kind = (attributes.get("type") or "text").strip().lower()
            if kind in _NOT_SENT:
                continue
            if kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    pairs.append((name, attributes.get("value") or "on"))
                continue
            pairs.append((name, attributes.get("value") or ""))
    return pairs


def _selected(select: LexborNode) -> list[str]:
    """A select's values: its selected options, else (a single select) its first."""
    options = [o for o in select.css("option") if "disabled" not in o.attributes]
    chosen = [o for o in options if "selected" in o.attributes]
    if "multiple" not in select.attributes:
        chosen = chosen[-1:] or options[:1]  # as browsers: the last selected one wins
    return [_option_value(o) for o in chosen]


def _option_value(option: LexborNode) -> str:
    value = option.attributes.get("value")
    return value if value is not None else option.text(deep=True).strip()


def _clicked(form: LexborNode, clickdata: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """The (name, value) of the button clicked: the first submit button, or the one
    `clickdata` picks ({"nr": 1}: the second; else attributes it must have)."""
    buttons = [b for b in form.css(_CLICKABLE) if "disabled" not in b.attributes]
    if not buttons:
        if clickdata:
            raise ValueError(f"no submit button matches {dict(clickdata)!r}: the form has none")
        return None
    button = buttons[0]
    if clickdata:
        if "nr" in clickdata:
            number = int(clickdata["nr"])
            if not 0 <= number < len(buttons):
                raise ValueError(f"no submit button number {number}: the form has {len(buttons)}")
            button = buttons[number]
        else:
            wanted = {k: str(v) for k, v in clickdata.items()}
            found = [b for b in buttons if all(b.attributes.get(k) == v for k, v in wanted.items())]
            if len(found) != 1:
                count = "no" if not found else "more than one"
                raise ValueError(f"{count} submit button matches {wanted!r}")
            button = found[0]
    name = button.attributes.get("name")
    return (name, button.attributes.get("value") or "") if name else None


def encode(pairs: Iterable[tuple[str, str]], encoding: str = "utf-8") -> str:
    """Form fields urlencoded, as a query string or an x-www-form-urlencoded body."""
    return urlencode(list(pairs), encoding=encoding, errors="xmlcharrefreplace")


def _pairs(formdata: FormData) -> list[tuple[str, str]]:
    """formdata as (name, value) pairs: a list value is several fields, a None one none."""
    items = formdata.items() if isinstance(formdata, Mapping) else formdata
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((str(name), str(v)) for v in value)
        else:
            pairs.append((str(name), str(value)))
    return pairs


def _with_form_type(headers: Mapping[str, str] | None) -> dict[str, str]:
    """`headers` with the form's Content-Type, unless they have one."""
    merged = dict(headers or {})
    if not any(k.lower() == "content-type" for k in merged):
        merged["Content-Type"] = _FORM_TYPE
    return merged
