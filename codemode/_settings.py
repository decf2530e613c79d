"""Validated settings for one codemode server. Every limit is explicit and named."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ._admission import ExecutionLimits
from ._sandbox import SandboxLimits
from ._upstream import UpstreamSettings

__all__ = ["ExecuteSettings", "ParamSettings", "SearchSettings", "ServerSettings"]


class SearchSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    default_limit: int = Field(default=8, ge=1, le=50, description="hits returned when the caller gives no limit")
    max_limit: int = Field(default=25, ge=1, description="most hits one search may return")
    max_response_tokens: int = Field(default=2500, ge=200, description="budget of one search answer (chars/4)")
    detail_tokens: int = Field(default=3000, ge=200, description="budget of one detail view (chars/4)")


class ExecuteSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    limits: SandboxLimits = SandboxLimits()
    max_calls: int = Field(default=50, ge=0, description="bridge calls (API calls) one execution may make")
    max_spec_calls: int = Field(default=10_000, ge=1, description="spec calls one code-mode search may make")
    max_call_bytes: int = Field(default=1_000_000, ge=1000, description="JSON size of one API call's arguments")
    max_response_chars: int = Field(default=40_000, ge=1000, description="size of one execute answer to the client")
    max_error_body_chars: int = Field(default=4_000, ge=100, description="upstream error body kept in ApiError.body")
    check_responses: bool = Field(default=True, description="note (never fail) responses that differ from the spec")
    read_only: bool = Field(default=False, description="only GET, HEAD and OPTIONS operations are callable")
    allow: tuple[str, ...] = Field(default=(), description="if set, only these operations (key, operationId or glob)")
    deny: tuple[str, ...] = Field(default=(), description="operations never callable (key, operationId or glob)")


class ParamSettings(BaseModel):
    """Parameters the server fills in itself; they disappear from the signatures ``search`` shows.

    Names are wire names and match in any location (headers in any case). A header parameter
    named like one of ``upstream.headers`` is filled by that header without being listed here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    credentials: tuple[str, ...] = Field(
        default=(), description="parameters that carry a credential: hidden, and the server's credentials stand in"
    )
    values: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="parameters sent with these values (overrides the spec's defaults)"
    )


class ServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str | None = None
    search: SearchSettings = SearchSettings()
    execute: ExecuteSettings = ExecuteSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    params: ParamSettings = ParamSettings()
    executions: ExecutionLimits = ExecutionLimits()
    env_prefix: str = Field(default="CODEMODE_", description="prefix of the credential environment variables")
