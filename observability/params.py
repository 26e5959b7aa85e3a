"""Strict query parameters: every endpoint knows its own set, and anything else is a 400.

A misspelt filter (`?servce=checkout`) must never silently widen a query. Each view (or
`@action`) *declares* its parameters in the places DRF and django-filter already use:

- `filterset_class`: the FilterSet of the list, or of an action that declares one in its
  `@action(..., filterset_class=...)` (the list's FilterSet is not inherited by actions);
- `query_serializer`: a DRF serializer of the action's own parameters
  (`@action(..., query_serializer=KpiParamSerializer)`; `HealthView.query_serializer`);
- `paginated`: `page` and `page_size` (always on for `list`; `@action(..., paginated=True)`);
- `format=json`, accepted everywhere.

`allowed_query_params(view)` reads those declarations, `StrictQueryParamsMixin` refuses the
rest before the view runs, and the OpenAPI schema (`schema.py`) documents exactly the same
set, so an action added later is strict by default and described by the same lines.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation

from observability.pagination import PageSizeSerializer
from observability.serializers import query_params

PAGE_PARAMS = frozenset(PageSizeSerializer().fields)


def _action_kwargs(view) -> dict:
    """The keyword arguments of the running `@action` ({} for list/create/... and APIViews)."""
    action = getattr(view, "action", None)
    handler = getattr(type(view), action, None) if action else None
    return getattr(handler, "kwargs", None) or {}


def declared(view, name: str):
    """What the running action (else the view) declares for `name`."""
    kwargs = _action_kwargs(view)
    # The router also sets @action kwargs on the view instance; reading the action itself
    # works however the view was built.
    return kwargs[name] if name in kwargs else getattr(view, name, None)


def filterset_class_for(view):
    """The FilterSet whose parameters this view/action takes, or None."""
    action = getattr(view, "action", None)
    if action in (None, "list") or "filterset_class" in _action_kwargs(view):  # None: a plain APIView
        return declared(view, "filterset_class")
    return None


def is_paginated(view) -> bool:
    """Whether this view/action answers pages (and so takes `page` and `page_size`)."""
    if declared(view, "pagination_class") is None:
        return False
    return getattr(view, "action", None) == "list" or bool(declared(view, "paginated"))


def allowed_query_params(view) -> set[str]:
    """Every query parameter this view/action accepts."""
    names = {"format"}
    serializer_class = declared(view, "query_serializer")
    if serializer_class is not None:
        names |= set(serializer_class().fields)
    filterset_class = filterset_class_for(view)
    if filterset_class is not None:
        names |= set(filterset_class.base_filters)
    if is_paginated(view):
        names |= PAGE_PARAMS
    return names


def check_query_params(view, request) -> None:
    """400 naming every query parameter this view/action does not know, or gets blank or twice.

    A blank value (`?service=`) or a repeated one (`?service=a&service=b`) would otherwise be
    dropped by the filters without a word, widening the query.
    """
    allowed = allowed_query_params(view)
    problems = {}
    for name, values in request.query_params.lists():
        if name not in allowed:
            problems[name] = "Unknown parameter."
        elif len(values) > 1:
            problems[name] = "Given more than once; give it once (status_code and ordering take a comma list)."
        elif values[0] == "":
            problems[name] = "A value is required (leave the parameter out instead)."
    if not problems:
        return
    unknown = sorted(name for name, problem in problems.items() if problem == "Unknown parameter.")
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        detail = (f"Unknown query parameter{plural}: {', '.join(unknown)}. "
                  f"This endpoint accepts: {', '.join(sorted(allowed))}.")
    else:
        detail = f"Invalid input: {', '.join(sorted(problems))}."
    raise ValidationError({**{name: [problem] for name, problem in problems.items() if name != "detail"},
                           "detail": detail})


class StrictQueryParamsMixin:
    """Refuse unknown query parameters (400) before the view or action runs.

    Runs after authentication and permission checks (DRF's `initial`), so a client without a
    credential learns nothing about the parameters.
    """

    query_serializer: type[serializers.Serializer] | None = None
    paginated = False

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        check_query_params(self, request)

    def query_params(self) -> dict:
        """The action's own parameters, validated by its `query_serializer` (400 naming a bad one)."""
        return query_params(declared(self, "query_serializer"), self.request)


class StrictContentNegotiation(DefaultContentNegotiation):
    """`?format=` other than one the view renders is a 400 naming the formats it offers.

    DRF answers an unknown format with a bare 404, which reads as "no such endpoint"; the
    parameter is wrong, so the answer is the 400 that names it, like any other bad value.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        name = settings.REST_FRAMEWORK.get("URL_FORMAT_OVERRIDE", "format")
        if not format_suffix and request.query_params.get(name) == "":
            # DRF reads a blank ?format= as absent; it is a value no renderer has.
            self.filter_renderers(renderers, "")
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            offered = ", ".join(sorted({renderer.format for renderer in renderers}))
            raise ValidationError({
                "detail": f'Unsupported format "{format}"; this endpoint offers format={offered} only.',
                settings.REST_FRAMEWORK.get("URL_FORMAT_OVERRIDE", "format"): [f"Use one of: {offered}."],
            })
        return chosen
