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


def check(response):
    """Raise unless the response is what the document says this request may get."""
    request = _SentRequest(response.request)
    try:
        spec().validate_response(request, WerkzeugOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        assert response.get_json(silent=True) == ROUTING_ANSWERS.get(response.status_code), (
            f"{response.request.method} {response.request.path} is not in the OpenAPI "
            f"document and answered {response.status_code}")


class ContractClient(FlaskClient):
    """A test client that validates every response against the OpenAPI document."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check(response)
        return response
