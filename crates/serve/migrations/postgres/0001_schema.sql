-- The server's tables (as in the embedded SQLite store). `seq` orders rows by insertion, for
-- "oldest first" and for keeping the newest `feedback.retain_requests` requests.
CREATE TABLE images (
    sha256 TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE requests (
    seq BIGSERIAL UNIQUE,
    id TEXT PRIMARY KEY,
    image_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    captions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    client TEXT
);
CREATE INDEX requests_by_image ON requests (image_sha256, client);
CREATE TABLE jobs (
    seq BIGSERIAL UNIQUE,
    id TEXT PRIMARY KEY,
    client TEXT,
    state TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_image ON jobs (image_sha256);
CREATE TABLE feedback (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT,
    image_sha256 TEXT NOT NULL,
    model TEXT,
    caption TEXT,
    rating SMALLINT,
    correction TEXT,
    client TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX feedback_by_request ON feedback (request_id);
CREATE INDEX feedback_by_image ON feedback (image_sha256);
