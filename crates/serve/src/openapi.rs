//! The OpenAPI 3 description served at `GET /openapi.json`, written by hand so that it says
//! exactly what the handlers in [`crate::api`] do.

use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn options() -> Value {
    json!({
        "num_captions": {"type": "integer", "minimum": 1, "description": "Captions per image, best first; at most beam_size (default from serve.yaml)."},
        "beam_size": {"type": "integer", "minimum": 1, "description": "Beams per image, 1 = greedy; at most decoding.max_beam_size (default decoding.default_beam_size, or the checkpoint's beam size). The length penalty, trigram blocking and bad-ending rule are the checkpoint's."},
        "max_length": {"type": "integer", "minimum": 1, "description": "Most words per caption; at most the model's own maximum (the default)."},
        "sampling": {"type": "object", "additionalProperties": false, "description": "Draw num_captions captions instead of a beam search (leave out beam_size). Cached only with a seed.", "properties": {
            "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
            "top_k": {"type": "integer", "minimum": 0, "default": 0, "description": "0 = all tokens."},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0},
            "seed": {"type": "integer", "minimum": 0, "description": "Same seed, image and options: same captions."}
        }},
        "return_tokens": {"type": "boolean", "default": false, "description": "Add each caption's tokens with their probabilities (`tokens`)."},
        "return_attention": {"type": "boolean", "default": false, "description": "Add each token's attention over the encoder grid (`attention`), for decoders that attend over it."}
    })
}

fn caption_errors() -> Value {
    json!({
        "400": error("Malformed JSON, invalid base64 or an unreadable body."),
        "401": error("Missing or invalid X-API-Key."),
        "413": error("Body over limits.max_body_bytes, or an image over limits.max_pixels."),
        "415": error("Not JSON or multipart, or an image that is not a JPEG, PNG or WebP, or is truncated or corrupt."),
        "422": error("Valid JSON with invalid content: unknown fields, wrong types, or options out of range."),
        "429": {
            "description": "The API key's rate limit is exhausted.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a request may succeed."}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        },
        "503": {
            "description": "No model loaded, the server's database cannot be written, or the model queue or the image decoders are full (then with Retry-After).",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a request may succeed."}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        },
        "504": error("The request took longer than limits.request_timeout_ms.")
    })
}

pub fn document() -> Value {
    let single_properties = merge(
        json!({
            "image": {"type": "string", "format": "byte", "description": "The image file (JPEG, PNG or WebP) in base64; a data: URL is accepted. Send this or image_url."},
            "image_url": {"type": "string", "format": "uri", "description": "An http(s) URL the server fetches the image from, when image_url.enabled (off by default) and the host is in image_url.allowed_hosts; private addresses are refused. Send this or image."}
        }),
        options(),
    );
    let batch_properties = merge(
        json!({"images": {"type": "array", "items": {"type": "string", "format": "byte"}, "description": "Up to limits.max_batch_images images in base64."}}),
        options(),
    );
    let multipart_options = options();
    let single_body = json!({
        "application/json": {"schema": {"type": "object", "oneOf": [{"required": ["image"]}, {"required": ["image_url"]}], "additionalProperties": false, "properties": single_properties}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": merge(json!({"image": {"type": "string", "format": "binary"}}), multipart_options.clone())}}
    });
    let job_id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "caption",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Image captioning with the registry's production model. /api/v1 needs an X-API-Key header unless the server runs with `auth: disabled`."
        },
        "paths": {
            "/api/v1/caption": {"post": {
                "summary": "Caption one image",
                "security": [{"ApiKey": []}],
                "requestBody": {"required": true, "content": single_body.clone()},
                "responses": merge(json!({"200": {"description": "Captions, best first.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CaptionResponse"}}}}}), caption_errors())
            }},
            "/api/v1/caption/batch": {"post": {
                "summary": "Caption several images (decoded together)",
                "security": [{"ApiKey": []}],
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["images"], "additionalProperties": false, "properties": batch_properties}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["images"], "properties": merge(json!({"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}), multipart_options)}}
                }},
                "responses": merge(json!({"200": {"description": "One result per image, in order.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}}}}), caption_errors())
            }},
            "/api/v1/jobs": {"post": {
                "summary": "Queue one image for captioning in the background (jobs survive restarts)",
                "security": [{"ApiKey": []}],
                "requestBody": {"required": true, "content": single_body},
                "responses": merge(json!({"202": {
                    "description": "Queued; poll the Location.",
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "/api/v1/jobs/{id}"}},
                    "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["accepted"]}, "job": {"$ref": "#/components/schemas/Job"}}}}}
                }}), caption_errors())
            }},
            "/api/v1/jobs/{id}": {"get": {
                "summary": "A job's state and, once succeeded, its captions",
                "security": [{"ApiKey": []}],
                "parameters": job_id,
                "responses": {
                    "200": {"description": "The job.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["success"]}, "job": {"$ref": "#/components/schemas/Job"}}}}}},
                    "401": error("Missing or invalid X-API-Key."),
                    "404": error("No such job, or another key's."),
                    "429": error("Rate limit exhausted (with Retry-After).")
                }
            }},
            "/api/v1/feedback": {"post": {
                "summary": "Rate or correct a caption; stored for export as a fine-tuning dataset",
                "security": [{"ApiKey": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}}},
                "responses": {
                    "201": {"description": "Stored.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["success"]}, "feedback": {"type": "object", "properties": {"id": {"type": "integer"}}}}}}}},
                    "400": error("Malformed JSON."),
                    "401": error("Missing or invalid X-API-Key."),
                    "404": error("Unknown request_id or image, or feedback disabled."),
                    "422": error("Neither request_id nor image_sha256, no rating nor correction, or a rating outside 1..5."),
                    "429": error("Rate limit exhausted (with Retry-After).")
                }
            }},
            "/api/v1/models": {"get": {
                "summary": "The registry's versions, the production version and the loaded one",
                "security": [{"ApiKey": []}],
                "responses": {
                    "200": {"description": "Versions in promotion order.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelsResponse"}}}},
                    "401": error("Missing or invalid X-API-Key."),
                    "429": error("Rate limit exhausted (with Retry-After).")
                }
            }},
            "/health": {"get": {"summary": "Liveness: the process answers", "responses": {"200": {"description": "Alive.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}}}},
            "/ready": {"get": {"summary": "Readiness: a model is loaded", "responses": {
                "200": {"description": "Ready.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ready"]}, "model": {"$ref": "#/components/schemas/ModelRef"}}}}}},
                "503": error("No model loaded.")
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format 0.0.4.", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document.", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        },
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {"type": "object", "required": ["status", "message"], "properties": {"status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
                "Caption": {"type": "object", "required": ["text", "confidence"], "properties": {
                    "text": {"type": "string"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description": "exp(mean token log-probability, <eos> included when emitted)."},
                    "tokens": {"type": "array", "description": "With return_tokens: each scored token (the words, then <eos> when emitted) and its probability; their geometric mean is confidence.", "items": {"type": "object", "required": ["text", "probability"], "properties": {
                        "text": {"type": "string"},
                        "probability": {"type": "number", "minimum": 0, "maximum": 1}
                    }}},
                    "attention": {"type": "object", "description": "With return_attention: where each scored token (as in tokens) looked, over the encoder's grid of rows x columns regions of the prepared image.", "required": ["rows", "columns", "weights"], "properties": {
                        "rows": {"type": "integer"},
                        "columns": {"type": "integer"},
                        "weights": {"type": "array", "description": "Per scored token: rows x columns weights, row-major from the top left, summing to 1.", "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}}
                    }}
                }},
                "ModelRef": {"type": "object", "required": ["name", "version", "id"], "properties": {"name": {"type": "string"}, "version": {"type": "integer"}, "id": {"type": "string"}}},
                "CaptionResponse": {"type": "object", "required": ["status", "captions", "model", "cached"], "properties": {
                    "status": {"type": "string", "enum": ["success"]},
                    "captions": {"type": "array", "items": {"$ref": "#/components/schemas/Caption"}},
                    "model": {"$ref": "#/components/schemas/ModelRef"},
                    "cached": {"type": "boolean"},
                    "request_id": {"type": "string", "description": "Names this answer in feedback (absent when feedback is disabled)."}
                }},
                "Job": {"type": "object", "required": ["id", "state", "created_at"], "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "started_at": {"type": "string", "format": "date-time", "nullable": true},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": true},
                    "options": {"type": "object"},
                    "captions": {"type": "array", "items": {"$ref": "#/components/schemas/Caption"}, "description": "Once succeeded."},
                    "model": {"$ref": "#/components/schemas/ModelRef"},
                    "cached": {"type": "boolean"},
                    "request_id": {"type": "string", "nullable": true, "description": "Names the result in feedback."},
                    "error": {"type": "string", "description": "Once failed: why."}
                }},
                "FeedbackRequest": {"type": "object", "additionalProperties": false, "properties": {
                    "request_id": {"type": "string", "description": "From a caption answer or a finished job."},
                    "image_sha256": {"type": "string", "description": "SHA-256 (hex) of an image this server captioned; instead of request_id."},
                    "caption": {"type": "string", "description": "The caption rated (default: the request's first)."},
                    "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                    "correction": {"type": "string", "description": "What the caption should have said."}
                }},
                "BatchResponse": {"type": "object", "required": ["status", "results", "model"], "properties": {
                    "status": {"type": "string", "enum": ["success"]},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "captions": {"type": "array", "items": {"$ref": "#/components/schemas/Caption"}},
                        "cached": {"type": "boolean"},
                        "request_id": {"type": "string"}
                    }}},
                    "model": {"$ref": "#/components/schemas/ModelRef"}
                }},
                "Version": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "integer"},
                    "source": {"type": "string"}, "promoted_by": {"type": "string"}, "promoted_at": {"type": "string", "format": "date-time"},
                    "run_name": {"type": "string"}, "step": {"type": "integer"},
                    "metrics": {"type": "object", "additionalProperties": {"type": "number"}}
                }},
                "ModelsResponse": {"type": "object", "properties": {
                    "status": {"type": "string", "enum": ["success"]},
                    "production": {"type": "string", "nullable": true},
                    "loaded": {"allOf": [{"$ref": "#/components/schemas/ModelRef"}], "nullable": true},
                    "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}
                }}
            }
        }
    })
}

/// `a` with `b`'s keys added (both objects).
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(target), Value::Object(extra)) = (a.as_object_mut(), b) {
        target.extend(extra);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_references_resolve() {
        let doc = document();
        for path in [
            "/api/v1/caption",
            "/api/v1/caption/batch",
            "/api/v1/jobs",
            "/api/v1/jobs/{id}",
            "/api/v1/feedback",
            "/api/v1/models",
            "/health",
            "/ready",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
        let codes = doc["paths"]["/api/v1/caption"]["post"]["responses"].as_object().unwrap();
        for code in ["200", "400", "401", "413", "415", "422", "429", "503"] {
            assert!(codes.contains_key(code), "{code}");
        }
    }
}
