-- The labels of each prediction's champion shapes, for the queue's label filter.
CREATE TABLE prediction_labels (
    id TEXT NOT NULL REFERENCES predictions (id),
    label TEXT NOT NULL,
    PRIMARY KEY (label, id)
);
