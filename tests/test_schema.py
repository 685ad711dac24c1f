"""The OpenAPI schema documents the bodies /api/similar/ and /api/locate/ really answer with."""

import pytest
from rest_framework.test import APIClient

from tests.conftest import SAMPLE_GALLERY, gps_exif, make_image_bytes, upload


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def schema(client, db):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


FREE_FORM = {"result"}  # a locate source's own answer: each source reports its own details


def resolve(schema: dict, node: dict) -> dict:
    """A schema node with $ref and single-entry allOf (how nullable nested objects are written) followed."""
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def undocumented(schema: dict, node: dict, body, where: str = "body") -> list[str]:
    """Every field of ``body`` the schema node does not declare, and every required one the body lacks."""
    node = resolve(schema, node)
    problems = []
    if isinstance(body, dict) and "properties" not in node:
        free_form = where.rsplit(".", 1)[-1] in FREE_FORM
        return [] if free_form else [f"{where} is documented as any object, not field by field"]
    if isinstance(body, dict):
        declared = set(node["properties"])
        problems += [f"{where}.{key} is not documented" for key in sorted(set(body) - declared)]
        problems += [f"{where}.{key} is required but absent" for key in node.get("required", []) if key not in body]
        for key in set(body) & declared:
            if body[key] is not None:
                problems += undocumented(schema, node["properties"][key], body[key], f"{where}.{key}")
    elif isinstance(body, list) and "items" in node:
        for index, item in enumerate(body[:3]):
            problems += undocumented(schema, node["items"], item, f"{where}[{index}]")
    return problems


def response_schema(schema: dict, path: str) -> dict:
    return schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_similar_response_is_documented_field_by_field(client, schema, sample_gallery):
    data = (SAMPLE_GALLERY / "photos/lund/01.jpg").read_bytes()
    body = client.post(
        "/api/similar/", {"image": upload(data), "near": "55.7,13.2", "radius_km": "5"}, format="multipart"
    ).json()

    assert body["coordinates"] is not None and body["prior"] is not None and body["clip_similarity"]["all_matches"]
    assert undocumented(schema, response_schema(schema, "/api/similar/"), body) == []


def test_explained_matches_are_documented_field_by_field(client, schema, verified_gallery):
    data = (SAMPLE_GALLERY / "photos/lund/01.jpg").read_bytes()
    body = client.post("/api/similar/", {"image": upload(data), "explain": "1"}, format="multipart").json()

    assert "correspondences" in body["clip_similarity"]["all_matches"][0]
    assert undocumented(schema, response_schema(schema, "/api/similar/"), body) == []
    parameters = schema["paths"]["/api/similar/"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "explain" in resolve(schema, parameters)["properties"]


def test_the_locate_response_is_documented_field_by_field(client, schema, sample_gallery):
    data = make_image_bytes(1, exif=gps_exif(55.7, 13.2))
    body = client.post("/api/locate/?all=1", {"image": upload(data)}, format="multipart").json()

    assert body["final"] is not None and len(body["sources"]) >= 2
    assert undocumented(schema, response_schema(schema, "/api/locate/"), body) == []


def test_the_checker_notices_an_undocumented_field(schema):
    body = {
        "success": True,
        "surprise": 1,
        "coordinates": None,
        "reason": None,
        "prior": None,
        "clip_similarity": {"similarity": None, "threshold": 0.7, "encoder": "x", "all_matches": []},
    }

    assert undocumented(schema, response_schema(schema, "/api/similar/"), body) == ["body.surprise is not documented"]


def test_the_checker_notices_a_body_documented_as_any_object(schema):
    assert undocumented(schema, {"type": "object", "additionalProperties": {}}, {"success": True}) == [
        "body is documented as any object, not field by field"
    ]
