-- Review state: every logged prediction with an image (ingested once from the prediction log),
-- at most one review per prediction, and which log objects have been ingested. Portable SQL:
-- the same migration runs on SQLite and PostgreSQL.

CREATE TABLE predictions (
    id TEXT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    deployment TEXT NOT NULL,
    image TEXT NOT NULL,
    champion_model TEXT NOT NULL,
    champion_version TEXT NOT NULL,
    shadow_model TEXT,
    shadow_version TEXT,
    -- The record as the inference server logged it (JSON).
    record TEXT NOT NULL,
    disagreement BIGINT NOT NULL,
    min_confidence DOUBLE PRECISION NOT NULL,
    reviewed BIGINT NOT NULL DEFAULT 0
);

-- The review queue's order: disagreements first, then the least confident, then the newest.
CREATE INDEX predictions_queue ON predictions (reviewed, disagreement DESC, min_confidence, time_ms DESC, id);

CREATE TABLE reviews (
    id TEXT PRIMARY KEY REFERENCES predictions (id),
    decision TEXT NOT NULL,
    -- The ground truth (JSON list of shapes).
    shapes TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    -- Set once the sample is in the feedback dataset; a row left at 0 is written again.
    written BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX reviews_unwritten ON reviews (written);

-- The ingestion cursor: each prediction-log object, ingested in the same transaction as its
-- records, so a restart neither skips nor repeats one.
CREATE TABLE ingested (
    path TEXT PRIMARY KEY,
    records BIGINT NOT NULL
);
