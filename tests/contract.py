"""Every response the test suite receives is checked against the OpenAPI document.

The `client` fixture hands out a ContractClient: a Flask test client whose every
response must match the operation's documented status, headers and body. A
response to a path or method the document does not describe must be the
routing 404/405, which the document's description covers.
"""
import functools

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

from potpie_flask import openapi

ROUTING_ANSWERS = {404: {"detail": "Not Found"}, 405: {"detail": "Method Not Allowed"}}


class _SentRequest(WerkzeugOpenAPIRequest):
    """The request of a test response; its body stream is already consumed and not needed."""

    @property
    def body(self):
        return None


@functools.cache
def spec():
    return OpenAPI.from_dict(openapi.build())


@functools.cache
def _paths():
    return openapi.build()["paths"]


def check(response):
    """Raise unless the response is what the document says this request may get."""
    request = _SentRequest(response.request)
    sent = response.request
    concrete = _paths().get(sent.path)
    try:
        if concrete is not None and sent.method.lower() not in concrete:
            # A path the document names as it is (/api/v2/integrations/save), asked with a
            # method it does not list: openapi-core would match the templated path
            # (/api/v2/integrations/{integration_id}) instead.
            raise OperationNotFound(sent.path, sent.method)
        spec().validate_response(request, WerkzeugOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        assert response.get_json(silent=True) == ROUTING_ANSWERS.get(response.status_code), (
            f"{sent.method} {sent.path} is not in the OpenAPI document and answered "
            f"{response.status_code}")


class ContractClient(FlaskClient):
    """A test client that validates every response against the OpenAPI document."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check(response)
        return response
