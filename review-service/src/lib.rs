//! Flywheel's review service: the single owner of a feedback loop's review state. It ingests
//! the prediction log every inference replica writes, keeps one global review queue in SQL
//! (SQLite by default, PostgreSQL from a URL), stores each decision exactly once, writes each
//! reviewed sample into the feedback dataset, and serves the review API and page.

pub mod http;
pub mod ingest;
pub mod metrics;
pub mod quality;
pub mod service;
pub mod store;

pub use ingest::{Ingested, ingest};
pub use quality::{ModelRef, PairQuality};
pub use service::{Service, ServiceError, Serving, Status, Submission, Written};
pub use store::{Decision, Filter, Item, Review, Store, StoreError, Totals};
