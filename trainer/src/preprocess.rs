//! Image → model input, exactly as the inference server does it: both use `flywheel-vision`
//! (resize by `stretch` or `letterbox` with grey 114 padding, triangle filter,
//! x = (p/255 - mean) / std, NCHW or NHWC), so the trainer optimises the model for the inputs it
//! will see in production and profiles datasets with the statistics the server monitors.

use flywheel_api::model_version::{InputSpec, Layout, ResizeMode};
use image::RgbImage;

pub use flywheel_vision::{BoxTransform, ImageStats};

/// One image as the model's input values (batch of one, `spec`'s layout) and the box transform.
pub fn to_input(img: &RgbImage, spec: &InputSpec) -> (Vec<f32>, BoxTransform) {
    let (values, placement) = flywheel_vision::to_input(img, &vision_spec(spec));
    (values, placement.box_transform())
}

/// Input tensor shape of a batch.
pub fn batch_shape(spec: &InputSpec, n: usize) -> Vec<usize> {
    flywheel_vision::batch_shape(&vision_spec(spec), n)
}

/// The ModelVersion's input spec as the shared pre-processing takes it.
fn vision_spec(spec: &InputSpec) -> flywheel_vision::InputSpec<'_> {
    flywheel_vision::InputSpec {
        width: spec.width,
        height: spec.height,
        channels: spec.channels,
        layout: match spec.layout {
            Layout::Nchw => flywheel_vision::Layout::Nchw,
            Layout::Nhwc => flywheel_vision::Layout::Nhwc,
        },
        mean: &spec.mean,
        std: &spec.std,
        resize: match spec.resize {
            ResizeMode::Stretch => flywheel_vision::ResizeMode::Stretch,
            ResizeMode::Letterbox => flywheel_vision::ResizeMode::Letterbox,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_version_spec_reaches_the_shared_transform() {
        let spec = InputSpec {
            width: 8,
            height: 8,
            channels: 3,
            layout: Layout::Nhwc,
            mean: vec![0.5],
            std: vec![0.5],
            resize: ResizeMode::Letterbox,
        };
        let img = RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 0]));
        let (data, t) = to_input(&img, &spec);
        assert_eq!(t.to_input([0.0, 0.0, 1.0, 1.0]), [0.0, 2.0, 8.0, 6.0]);
        assert_eq!(batch_shape(&spec, 4), vec![4, 8, 8, 3]);
        // NHWC, row 0 is padding (grey), row 2 is red: (1 - 0.5) / 0.5 = 1 in the red channel.
        assert!((data[0] - (114.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
        assert!((data[2 * 8 * 3] - 1.0).abs() < 1e-5);
    }
}
