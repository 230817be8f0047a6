-- The review queue samples the champion's predicted classes in proportion
-- (flywheel_vision::review_order::queue_order): each prediction's stratum (the label of the
-- champion's least confident shape, '' when it found nothing) and its spread (a pseudo-random
-- position in 0..1 fixed by its id), both set at ingest. Predictions ingested before this
-- migration keep '' and 0: one stratum, in id order.

ALTER TABLE predictions ADD COLUMN stratum TEXT NOT NULL DEFAULT '';
ALTER TABLE predictions ADD COLUMN spread DOUBLE PRECISION NOT NULL DEFAULT 0;

CREATE INDEX predictions_strata ON predictions (reviewed, disagreement, stratum, spread, id);
