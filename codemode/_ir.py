"""The intermediate representation (IR) of an API spec.

A spec is parsed once into an :class:`ApiSpec`. Search, signatures, the guest
client, argument validation and dry runs all read this IR, never the raw spec.
Schemas are kept by reference (``{"$ref": "#/components/schemas/Name"}``) in
``ApiSpec.schemas``; nothing is inlined, so reference cycles cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "READ_METHODS",
    "SCHEMA_REF_PREFIX",
    "ApiSpec",
    "Body",
    "Encoding",
    "Fill",
    "FillSource",
    "OAuthFlow",
    "Operation",
    "Param",
    "ParamLocation",
    "Response",
    "SecurityScheme",
    "SpecWarning",
]

SCHEMA_REF_PREFIX = "#/components/schemas/"
READ_METHODS = frozenset({"get", "head", "options"})

ParamLocation = Literal["path", "query", "header", "cookie", "body", "form"]
"""``body`` is a field of a flattened JSON body, ``form`` a field of a form body."""


@dataclass(frozen=True, slots=True)
class SpecWarning:
    """Something imperfect in the spec that was tolerated. ``pointer`` is a JSON pointer."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


FillSource = Literal["credential", "spec", "server"]
"""Why the host fills a parameter in: it carries a credential, the spec fixes its value (a single enum
value, a default header, ``Accept``/``Content-Type``), or the server's configuration sets it."""


@dataclass(frozen=True, slots=True)
class Fill:
    """A parameter the host fills in. It is hidden from signatures and never taken from guest code.

    ``scheme`` names the apiKey security scheme whose credential is sent in its place (``None``: the
    operation's own credentials stand in and the parameter is left out). ``value`` is what is sent
    for ``spec``/``server`` fills (``None``: left out).
    """

    source: FillSource
    scheme: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # name on the wire
    py_name: str  # keyword argument name in Python
    location: ParamLocation
    required: bool
    schema: dict[str, Any]
    description: str = ""
    style: str | None = None
    explode: bool | None = None
    fill: Fill | None = None  # set: filled in host-side, hidden from the guest
    media_type: str | None = None  # a parameter given by ``content``: its value is sent in this media type

    @property
    def hidden(self) -> bool:
        return self.fill is not None


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one field of a form body is sent (OpenAPI ``requestBody.content[*].encoding``)."""

    content_type: str | None = None  # multipart: the part's Content-Type
    style: str | None = None  # urlencoded: form | spaceDelimited | pipeDelimited | deepObject
    explode: bool | None = None
    allow_reserved: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # multipart: part headers with a fixed value


@dataclass(frozen=True, slots=True)
class Body:
    media_type: str
    schema: dict[str, Any] | None
    required: bool
    flattened: bool  # True: fields are Params with location "body"/"form"; False: one ``body`` param
    encoding: tuple[tuple[str, Encoding], ...] = ()  # field name -> how it is sent (form bodies)

    def encoding_of(self, name: str) -> Encoding | None:
        return next((e for n, e in self.encoding if n == name), None)


@dataclass(frozen=True, slots=True)
class Response:
    status: str  # "200", "2XX", "default"
    description: str
    media_type: str | None
    schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Operation:
    key: str  # "group.name": the Python path below ``api``
    group: str
    name: str
    method: str  # lower case
    path: str  # path template, verbatim
    operation_id: str | None
    summary: str
    description: str
    tags: tuple[str, ...]
    params: tuple[Param, ...]
    body: Body | None
    responses: tuple[Response, ...]
    security: tuple[tuple[str, ...], ...]  # alternatives; each is an AND of scheme names; () = none
    servers: tuple[str, ...]  # operation- or path-level servers, overriding the spec's
    deprecated: bool
    pointer: str  # JSON pointer of the operation in the source spec
    # For each alternative of ``security``, the scopes it requires (of any of its schemes), in order.
    security_scopes: tuple[tuple[str, ...], ...] = ()

    @property
    def visible_params(self) -> tuple[Param, ...]:
        """The parameters guest code passes (filled ones are the host's)."""
        return tuple(p for p in self.params if p.fill is None)

    @property
    def label(self) -> str:
        """``GET /pets/{id}``: the verbatim method and path template."""
        return f"{self.method.upper()} {self.path}"

    @property
    def read_only(self) -> bool:
        return self.method in READ_METHODS

    @property
    def scopes(self) -> tuple[str, str]:
        """Scopes a token needs to call this operation: the access class and the operation.

        This is the seam for the OAuth portal: ``read``/``write`` for coarse grants and
        ``op:<group.name>`` for a grant of exactly this operation.
        """
        return ("read" if self.read_only else "write", f"op:{self.key}")

    def success_response(self) -> Response | None:
        for r in self.responses:
            if r.status.startswith("2"):
                return r
        for r in self.responses:
            if r.status == "default":
                return r
        return None


@dataclass(frozen=True, slots=True)
class OAuthFlow:
    """One OAuth 2 flow of a security scheme, as the spec declares it (Swagger 2.0 flows mapped)."""

    kind: str  # authorizationCode | clientCredentials | implicit | password
    authorization_url: str | None
    token_url: str | None
    refresh_url: str | None
    scopes: tuple[tuple[str, str], ...]  # (scope, description)


@dataclass(frozen=True, slots=True)
class SecurityScheme:
    name: str
    type: str  # apiKey | http | oauth2 | openIdConnect | mutualTLS
    scheme: str | None = None  # http: bearer | basic | ...
    location: str | None = None  # apiKey: header | query | cookie
    param_name: str | None = None  # apiKey: header/query/cookie name
    token_url: str | None = None  # oauth2 client credentials
    scopes: tuple[str, ...] = ()  # oauth2 client credentials: the scopes to ask for
    flows: tuple[OAuthFlow, ...] = ()  # oauth2: every declared flow
    openid_connect_url: str | None = None  # openIdConnect: the discovery document

    def flow(self, kind: str) -> OAuthFlow | None:
        return next((f for f in self.flows if f.kind == kind), None)


@dataclass(slots=True)
class ApiSpec:
    title: str
    version: str
    spec_version: str  # "2.0", "3.0.3", "3.1.0", ...
    description: str
    servers: tuple[str, ...]
    operations: tuple[Operation, ...]
    schemas: dict[str, dict[str, Any]]  # display name -> schema (refs point into this dict)
    security_schemes: dict[str, SecurityScheme]
    warnings: tuple[SpecWarning, ...]
    source: str
    content_hash: str
    webhooks: int = 0
    tag_descriptions: dict[str, str] = field(default_factory=dict)  # tag name -> its description (top-level tags)
    _by_key: dict[str, Operation] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {op.key: op for op in self.operations}

    @property
    def dialect(self) -> Literal["oas30", "oas31"]:
        return "oas31" if self.spec_version.startswith(("3.1", "3.2")) else "oas30"

    def operation(self, key: str) -> Operation | None:
        return self._by_key.get(key)
