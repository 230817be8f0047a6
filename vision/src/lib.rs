//! Image pre-processing shared by the inference server and the trainer. The trainer must feed a
//! model exactly the inputs the server will feed it, and profile datasets with exactly the image
//! statistics the server monitors for drift, and score a model with the same metrics offline and live;
//! one implementation makes that hold by construction.

pub mod boxes;
pub mod decode;
pub mod detect;
pub mod preprocess;
pub mod quality;
pub mod review_order;
pub mod reviewed;
pub mod stats;

pub use boxes::{BoxTransform, Candidate, InverseTransform, iou, nms, nms_with};
pub use preprocess::{Placement, UnsupportedInput, batch_shape, check_input, to_input};
pub use stats::ImageStats;
