//! The built-in trainer's own options: an optional `trainerOptions` object in the training
//! request, beside the `TrainRequest` fields (the operator and bring-your-own trainers ignore
//! it; every field has a default, so a request without it trains with the defaults).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainerError};

/// `trainerOptions` of a training request (docs/trainer.md, "Training options").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TrainOptions {
    /// At least this share of every training batch is feedback (reviewed) samples, drawn again
    /// as often as needed; the rest replays the old training data.
    pub feedback_fraction: f64,
    /// Share of the feedback samples, the newest ones, held out to judge the run.
    pub feedback_eval_fraction: f64,
    /// Share of the old training data held out (by a hash of the path) when the request has
    /// no eval dataset.
    pub eval_fraction: f64,
    /// Augmentation of training images; `null` turns it off.
    pub augment: Option<AugmentOptions>,
    /// Linear warm-up over this share of the training steps, then a cosine decay.
    pub warmup_fraction: f64,
    /// The learning rate at the end of the cosine, as a share of `learningRate`.
    pub final_lr_fraction: f64,
    /// Stop after this many epochs without a better eval metric; 0: never stop early.
    pub patience: u32,
    /// `trainLayers: head`: how many parameterised layers, walking back from the outputs,
    /// are trained (1: the heads only).
    pub head_depth: u32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            feedback_fraction: 0.5,
            feedback_eval_fraction: 0.2,
            eval_fraction: crate::dataset::DEFAULT_EVAL_FRACTION,
            augment: Some(AugmentOptions::default()),
            warmup_fraction: 0.1,
            final_lr_fraction: 0.2,
            patience: 3,
            head_depth: 1,
        }
    }
}

/// Random changes to a training image, drawn per image and epoch (reproducibly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AugmentOptions {
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// Scale jitter: the image is zoomed by a factor in [1 / (1 + scale), 1 + scale] around a
    /// random point (cropped when zoomed in, padded with grey when zoomed out).
    pub scale: f64,
    /// Colour jitter: brightness, contrast and saturation each times a factor in
    /// [1 - color, 1 + color].
    pub color: f64,
}

impl Default for AugmentOptions {
    fn default() -> Self {
        Self { flip: 0.5, scale: 0.25, color: 0.15 }
    }
}

fn fraction(name: &str, v: f64, upper_open: bool) -> Result<()> {
    let ok = v.is_finite() && v >= 0.0 && if upper_open { v < 1.0 } else { v <= 1.0 };
    if ok {
        Ok(())
    } else {
        let range = if upper_open { "0 to below 1" } else { "0 to 1" };
        Err(TrainerError::Request(format!("trainerOptions.{name} must be from {range}, got {v}")))
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        fraction("feedbackFraction", self.feedback_fraction, false)?;
        fraction("feedbackEvalFraction", self.feedback_eval_fraction, true)?;
        fraction("evalFraction", self.eval_fraction, true)?;
        fraction("warmupFraction", self.warmup_fraction, true)?;
        fraction("finalLrFraction", self.final_lr_fraction, false)?;
        if self.head_depth == 0 {
            return Err(TrainerError::Request("trainerOptions.headDepth must be at least 1".into()));
        }
        if let Some(a) = &self.augment {
            fraction("augment.flip", a.flip, false)?;
            fraction("augment.color", a.color, true)?;
            if !(a.scale.is_finite() && (0.0..=1.0).contains(&a.scale)) {
                return Err(TrainerError::Request(format!(
                    "trainerOptions.augment.scale must be from 0 to 1, got {}",
                    a.scale
                )));
            }
        }
        Ok(())
    }
}

/// The part of a request JSON the built-in trainer reads beyond `TrainRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestExtras {
    #[serde(default)]
    pub trainer_options: TrainOptions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_options_gets_the_defaults() {
        let extras: RequestExtras = serde_json::from_str(r#"{"baseModel": {}, "train": []}"#).unwrap();
        assert_eq!(extras.trainer_options, TrainOptions::default());
        extras.trainer_options.validate().unwrap();
    }

    #[test]
    fn options_are_partial_and_augmentation_can_be_turned_off() {
        let o: TrainOptions =
            serde_json::from_str(r#"{"feedbackFraction": 0.25, "augment": null, "patience": 0}"#).unwrap();
        assert_eq!(o.feedback_fraction, 0.25);
        assert_eq!(o.augment, None);
        assert_eq!(o.patience, 0);
        assert_eq!(o.head_depth, 1);
        let o: TrainOptions = serde_json::from_str(r#"{"augment": {"flip": 0}}"#).unwrap();
        assert_eq!(o.augment, Some(AugmentOptions { flip: 0.0, ..AugmentOptions::default() }));
    }

    #[test]
    fn bad_values_and_unknown_fields_are_refused() {
        assert!(serde_json::from_str::<TrainOptions>(r#"{"feedbackFracton": 0.2}"#).is_err());
        let bad = TrainOptions { feedback_eval_fraction: 1.0, ..TrainOptions::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("feedbackEvalFraction"));
        let bad = TrainOptions { head_depth: 0, ..TrainOptions::default() };
        assert!(bad.validate().is_err());
        let bad = TrainOptions {
            augment: Some(AugmentOptions { scale: f64::NAN, ..Default::default() }),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
