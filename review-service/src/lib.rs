//! Flywheel's review service: the single owner of a feedback loop's review state. It ingests
//! the prediction log every inference replica writes, keeps one global review queue in SQL
//! (SQLite by default, PostgreSQL from a URL) and stores each decision exactly once.

pub mod ingest;
pub mod store;

pub use ingest::{Ingested, ingest};
pub use store::{Decision, Item, Review, Store, StoreError, Totals};
