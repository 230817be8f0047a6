//! Review state in SQL (SQLite by default, PostgreSQL from a URL) through sqlx's runtime-generic
//! driver: one schema (migrations/), versioned migrations applied at connect, and every change
//! that must happen exactly once done in one transaction.
//!
//! - A prediction-log object is ingested with its path in the same transaction, so a restart
//!   neither skips nor repeats one.
//! - A decision flips `reviewed` with a conditional update in the transaction that stores the
//!   review: of two concurrent decisions on one prediction, exactly one is stored.
//! - A review is `written` only once its sample is in the feedback dataset; the rest are
//!   written again after a crash.

use flywheel_types::prediction::{PredictionRecord, Shape};
use flywheel_vision::review_order::{QueueKey, lowest_confidence};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Connection, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no prediction {0:?} to review")]
    NotFound(String),
    #[error("prediction {0:?} was already reviewed")]
    AlreadyReviewed(String),
    #[error("row {id:?} holds unreadable JSON: {source}")]
    Corrupt { id: String, source: serde_json::Error },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The reviewer's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Correct,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Correct => "correct",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "correct" { Self::Correct } else { Self::Accept }
    }
}

/// One prediction in the queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub record: PredictionRecord,
    pub disagreement: bool,
    pub min_confidence: f32,
    pub reviewed: bool,
}

/// A stored review and what its feedback sample is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub id: String,
    pub decision: Decision,
    pub shapes: Vec<Shape>,
    pub time_ms: i64,
    pub record: PredictionRecord,
}

/// Totals of the review state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub predictions: i64,
    pub reviewed: i64,
    pub written: i64,
}

/// Which predictions a queue page shows (all conditions must hold).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// None for all; Some(false) for those still to review.
    pub reviewed: Option<bool>,
    /// Only predictions with a champion shape of this label.
    pub label: Option<String>,
    /// Only predictions whose lowest champion confidence is at most this.
    pub max_confidence: Option<f32>,
    /// Only predictions where champion and shadow (dis)agree.
    pub disagreement: Option<bool>,
}

/// A value bound to a filter's placeholder.
enum Bind {
    Int(i64),
    Real(f64),
    Text(String),
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Bind {
    fn bind_to<'q>(&self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        match self {
            Bind::Int(v) => query.bind(*v),
            Bind::Real(v) => query.bind(*v),
            Bind::Text(v) => query.bind(v.clone()),
        }
    }
}

impl Filter {
    /// ` WHERE ...` (or nothing) with numbered placeholders from $1, and their values.
    fn to_sql(&self) -> (String, Vec<Bind>) {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        let mut push = |condition: &str, bind: Bind| {
            binds.push(bind);
            conditions.push(condition.replace('?', &format!("${}", binds.len())));
        };
        if let Some(r) = self.reviewed {
            push("reviewed = ?", Bind::Int(i64::from(r)));
        }
        if let Some(l) = &self.label {
            push("id IN (SELECT id FROM prediction_labels WHERE label = ?)", Bind::Text(l.clone()));
        }
        if let Some(m) = self.max_confidence {
            push("min_confidence <= ?", Bind::Real(f64::from(m)));
        }
        if let Some(d) = self.disagreement {
            push("disagreement = ?", Bind::Int(i64::from(d)));
        }
        let clause = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        (clause, binds)
    }
}

pub struct Store {
    pool: AnyPool,
}

const SELECT_ITEM: &str = "SELECT record, disagreement, min_confidence, reviewed FROM predictions";

fn json<T: serde::de::DeserializeOwned>(id: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { id: id.to_string(), source })
}

fn item(row: &AnyRow) -> Result<Item> {
    let record: String = row.try_get("record")?;
    Ok(Item {
        record: json("predictions.record", &record)?,
        disagreement: row.try_get::<i64, _>("disagreement")? != 0,
        min_confidence: row.try_get::<f64, _>("min_confidence")? as f32,
        reviewed: row.try_get::<i64, _>("reviewed")? != 0,
    })
}

impl Store {
    /// Connects (`sqlite://<path>?mode=rwc` creates the file) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        // SQLite allows one writer: one connection serialises writers without "database is
        // locked" retries. PostgreSQL takes concurrent transactions.
        let connections = if url.starts_with("sqlite:") { 1 } else { 8 };
        // A database out of reach answers within seconds (a 503), not after sqlx's 30 s default.
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                        // On every connection (the pool replaces idle and failed ones): a
                        // write-ahead log with full sync, so a crash or a full disk never leaves
                        // the file half-written and a committed transaction survives a power cut.
                        for pragma in ["journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON"] {
                            sqlx::query(&format!("PRAGMA {pragma}")).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            // A connection whose transaction did not end (a COMMIT that failed, e.g. on a full
            // disk) is closed, never reused: sqlx would run the next transaction on it as a
            // savepoint of the dead one, and "commit" decisions that are never written.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the database connections (waits for them to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Paths of the prediction-log objects already ingested.
    pub async fn ingested_paths(&self) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT path FROM ingested").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("path")?)).collect()
    }

    /// Ingests one prediction-log object's records (those with an image can be reviewed) and
    /// its path, in one transaction. Returns the predictions added; 0 when the object was
    /// ingested before.
    pub async fn ingest_object(&self, path: &str, records: &[PredictionRecord]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for r in records {
            let Some(image) = &r.image else { continue };
            let key = QueueKey::new(r.task, &r.id, &r.champion.shapes, r.shadow.as_ref().map(|s| s.shapes.as_slice()));
            let record = serde_json::to_string(r).expect("a record serialises");
            added += sqlx::query(
                "INSERT INTO predictions (id, time_ms, deployment, image, champion_model, champion_version, \
                 shadow_model, shadow_version, record, disagreement, min_confidence, reviewed, stratum, spread) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&r.id)
            .bind(r.time.timestamp_millis())
            .bind(&r.deployment)
            .bind(image)
            .bind(&r.champion.model)
            .bind(&r.champion.version)
            .bind(r.shadow.as_ref().map(|s| s.model.clone()))
            .bind(r.shadow.as_ref().map(|s| s.version.clone()))
            .bind(record)
            .bind(i64::from(key.disagreement))
            .bind(f64::from(lowest_confidence(&r.champion.shapes)))
            .bind(&key.stratum)
            .bind(key.spread)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let labels: std::collections::BTreeSet<&str> = r.champion.shapes.iter().map(|s| s.label.as_str()).collect();
            for label in labels {
                sqlx::query("INSERT INTO prediction_labels (id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&r.id)
                    .bind(label)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let cursor = sqlx::query("INSERT INTO ingested (path, records) VALUES ($1, $2) ON CONFLICT (path) DO NOTHING")
            .bind(path)
            .bind(records.len() as i64)
            .execute(&mut *tx)
            .await?;
        if cursor.rows_affected() == 0 {
            // Ingested before (by an earlier run): nothing of this attempt is kept.
            tx.rollback().await?;
            return Ok(0);
        }
        tx.commit().await?;
        Ok(added)
    }

    /// One page of the queue in `review_order::queue_order`'s order: a stratified sample of the
    /// predictions matching `filter`, each (disagreement, stratum) part in proportion to its
    /// size, by spread within it. Returns the page and the total matching `filter`.
    pub async fn list(&self, filter: &Filter, limit: i64, offset: i64) -> Result<(Vec<Item>, i64)> {
        let (clause, binds) = filter.to_sql();
        let n = binds.len();
        let page = format!(
            "SELECT record, disagreement, min_confidence, reviewed FROM (SELECT record, disagreement, min_confidence, \
             reviewed, spread, id, (CAST(ROW_NUMBER() OVER (PARTITION BY disagreement, stratum ORDER BY spread, id) \
             AS DOUBLE PRECISION) - 0.5) / CAST(COUNT(*) OVER (PARTITION BY disagreement, stratum) AS DOUBLE PRECISION) \
             AS turn FROM predictions{clause}) AS queue ORDER BY turn, spread, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(&page);
        for b in &binds {
            query = b.bind_to(query);
        }
        let rows = query.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let count = format!("SELECT COUNT(*) AS n FROM predictions{clause}");
        let mut query = sqlx::query(&count);
        for b in &binds {
            query = b.bind_to(query);
        }
        let total: i64 = query.fetch_one(&self.pool).await?.try_get("n")?;
        Ok((rows.iter().map(item).collect::<Result<_>>()?, total))
    }

    /// The (champion, shadow) versions serving now, as the newest prediction names them: its
    /// champion, and the shadow of that champion's newest prediction that has one.
    pub async fn serving_pair(&self) -> Result<Option<(String, String, Option<(String, String)>)>> {
        let Some(newest) = sqlx::query(
            "SELECT champion_model, champion_version FROM predictions ORDER BY time_ms DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let (model, version): (String, String) =
            (newest.try_get("champion_model")?, newest.try_get("champion_version")?);
        let shadow = sqlx::query(
            "SELECT shadow_model, shadow_version FROM predictions WHERE champion_model = $1 AND champion_version = $2 \
             AND shadow_version IS NOT NULL ORDER BY time_ms DESC, id DESC LIMIT 1",
        )
        .bind(&model)
        .bind(&version)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| Ok::<_, StoreError>((row.try_get("shadow_model")?, row.try_get("shadow_version")?)))
        .transpose()?;
        Ok(Some((model, version, shadow)))
    }

    /// Every reviewed prediction with its ground truth, for the quality figures, by id in byte
    /// order (tied confidences rank in input order, so the order must not depend on a
    /// database's collation for the figures to be the same everywhere).
    pub async fn reviewed(&self) -> Result<Vec<(PredictionRecord, Vec<Shape>)>> {
        let rows = sqlx::query("SELECT p.id AS id, p.record AS record, r.shapes AS shapes FROM reviews r JOIN predictions p ON p.id = r.id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let (record, shapes): (String, String) = (row.try_get("record")?, row.try_get("shapes")?);
                Ok((json(&id, &record)?, json(&id, &shapes)?))
            })
            .collect::<Result<Vec<(PredictionRecord, Vec<Shape>)>>>()
            .map(|mut rows| {
                rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
                rows
            })
    }

    pub async fn get(&self, id: &str) -> Result<Item> {
        let row = sqlx::query(&format!("{SELECT_ITEM} WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        item(&row.ok_or_else(|| StoreError::NotFound(id.to_string()))?)
    }

    /// Stores a decision exactly once: the prediction flips to reviewed and the review is
    /// stored in one transaction; a second decision is [`StoreError::AlreadyReviewed`].
    pub async fn decide(&self, id: &str, decision: Decision, shapes: &[Shape], time_ms: i64) -> Result<()> {
        let mut tx: Transaction<'_, sqlx::Any> = self.pool.begin().await?;
        let flipped = sqlx::query("UPDATE predictions SET reviewed = 1 WHERE id = $1 AND reviewed = 0")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if flipped == 0 {
            let exists =
                sqlx::query("SELECT id FROM predictions WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            tx.rollback().await?;
            return Err(match exists {
                Some(_) => StoreError::AlreadyReviewed(id.to_string()),
                None => StoreError::NotFound(id.to_string()),
            });
        }
        sqlx::query("INSERT INTO reviews (id, decision, shapes, time_ms, written) VALUES ($1, $2, $3, $4, 0)")
            .bind(id)
            .bind(decision.as_str())
            .bind(serde_json::to_string(shapes).expect("shapes serialise"))
            .bind(time_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored review of a prediction, if any: decision, ground truth, time (ms).
    pub async fn review(&self, id: &str) -> Result<Option<(Decision, Vec<Shape>, i64)>> {
        let row = sqlx::query("SELECT decision, shapes, time_ms FROM reviews WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let shapes: String = row.try_get("shapes")?;
        Ok(Some((Decision::parse(&row.try_get::<String, _>("decision")?), json(id, &shapes)?, row.try_get("time_ms")?)))
    }

    /// Reviews whose sample is not in the feedback dataset yet, oldest first.
    pub async fn unwritten(&self, limit: i64) -> Result<Vec<Review>> {
        let rows = sqlx::query(
            "SELECT r.id AS id, r.decision AS decision, r.shapes AS shapes, r.time_ms AS time_ms, p.record AS record \
             FROM reviews r JOIN predictions p ON p.id = r.id WHERE r.written = 0 ORDER BY r.time_ms, r.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let shapes: String = row.try_get("shapes")?;
                let record: String = row.try_get("record")?;
                Ok(Review {
                    decision: Decision::parse(&row.try_get::<String, _>("decision")?),
                    shapes: json(&id, &shapes)?,
                    time_ms: row.try_get("time_ms")?,
                    record: json(&id, &record)?,
                    id,
                })
            })
            .collect()
    }

    /// Marks a review's sample as written (after the put succeeded).
    pub async fn mark_written(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE reviews SET written = 1 WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn totals(&self) -> Result<Totals> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM predictions) AS predictions, (SELECT COUNT(*) FROM reviews) AS reviewed, \
             (SELECT COUNT(*) FROM reviews WHERE written = 1) AS written",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Totals {
            predictions: row.try_get("predictions")?,
            reviewed: row.try_get("reviewed")?,
            written: row.try_get("written")?,
        })
    }
}
