"""The OpenAPI 3.0 document of the provider's protected API (``/openapi.json``).

Its ``oauth2`` security scheme declares the provider's real authorization-code flow (authorize,
token and refresh URLs, and the scopes), the way a real upstream API publishes it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_SCOPES", "openapi_document"]

API_SCOPES = {
    "notes:read": "Read your notes",
    "notes:write": "Create, change and delete your notes",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(base_url: str) -> dict[str, Any]:
    secured_read = [{"oauth2": ["notes:read"]}]
    secured_write = [{"oauth2": ["notes:write"]}]
    note_id = {"name": "note_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    errors = {"401": {"description": "Missing, invalid or expired token"}}
    not_found = {"404": {"description": "No such note"}}
    body = {"required": True, "content": {"application/json": {"schema": _ref("NoteInput")}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Test provider notes API", "version": "1.0.0"},
        "servers": [{"url": base_url}],
        "paths": {
            "/api/me": {
                "get": {
                    "operationId": "getMe",
                    "summary": "The user the access token belongs to",
                    "security": [{"oauth2": []}],
                    "responses": {"200": _json(_ref("Me")), **errors},
                }
            },
            "/api/notes": {
                "get": {
                    "operationId": "listNotes",
                    "summary": "List your notes",
                    "security": secured_read,
                    "responses": {"200": _json({"type": "array", "items": _ref("Note")}), **errors},
                },
                "post": {
                    "operationId": "createNote",
                    "summary": "Create a note",
                    "security": secured_write,
                    "requestBody": body,
                    "responses": {"201": _json(_ref("Note"), "Created"), **errors},
                },
            },
            "/api/notes/{note_id}": {
                "parameters": [note_id],
                "get": {
                    "operationId": "getNote",
                    "summary": "Read one note",
                    "security": secured_read,
                    "responses": {"200": _json(_ref("Note")), **errors, **not_found},
                },
                "put": {
                    "operationId": "updateNote",
                    "summary": "Replace a note's text",
                    "security": secured_write,
                    "requestBody": body,
                    "responses": {"200": _json(_ref("Note")), **errors, **not_found},
                },
                "delete": {
                    "operationId": "deleteNote",
                    "summary": "Delete a note",
                    "security": secured_write,
                    "responses": {"204": {"description": "Deleted"}, **errors, **not_found},
                },
            },
        },
        "components": {
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": f"{base_url}/authorize",
                            "tokenUrl": f"{base_url}/token",
                            "refreshUrl": f"{base_url}/token",
                            "scopes": API_SCOPES,
                        }
                    },
                }
            },
            "schemas": {
                "Me": {
                    "type": "object",
                    "required": ["sub", "username", "client_id", "scope"],
                    "properties": {
                        "sub": {"type": "string"},
                        "username": {"type": "string"},
                        "email": {"type": "string"},
                        "client_id": {"type": "string"},
                        "scope": {"type": "string"},
                    },
                },
                "NoteInput": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"type": "string", "maxLength": 10000}},
                },
                "Note": {
                    "type": "object",
                    "required": ["id", "text", "owner"],
                    "properties": {
                        "id": {"type": "integer"},
                        "text": {"type": "string"},
                        "owner": {"type": "string"},
                    },
                },
            },
        },
    }
