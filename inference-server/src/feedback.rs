//! The feedback dataset writer lives in `flywheel_storage::feedback` (the review service writes
//! samples the same way); this maps its errors to the server's: a sample the dataset cannot
//! hold is a 400, an unreadable COCO index a 500 naming the file.

pub use flywheel_storage::feedback::{FeedbackError, FeedbackWriter, Sample};

use crate::error::ServerError;

impl From<FeedbackError> for ServerError {
    fn from(e: FeedbackError) -> Self {
        match e {
            FeedbackError::BadSample(m) => ServerError::bad_request(m),
            e @ FeedbackError::UnreadableIndex { .. } => ServerError::Storage(e.to_string()),
            FeedbackError::Storage(e) => e.into(),
        }
    }
}
