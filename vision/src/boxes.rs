//! Box geometry: overlap, and the mappings between original-image and model-input coordinates.

/// Intersection over union of two [x1, y1, x2, y2] boxes; 0 when both are empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// A detection candidate as non-maximum suppression sees it.
pub trait Candidate {
    fn class(&self) -> usize;
    fn bbox(&self) -> &[f32; 4];
    fn score(&self) -> f32;
}

/// Greedy per-class NMS, highest score first: a candidate is kept unless a kept one of its class
/// overlaps it by more than `iou_threshold`; at most `max_detections` are kept.
pub fn nms<T: Candidate>(dets: Vec<T>, iou_threshold: f32, max_detections: usize) -> Vec<T> {
    nms_with(dets, iou_threshold, max_detections, false)
}

/// [`nms`], or across classes when `class_agnostic` (a kept box of any class suppresses).
pub fn nms_with<T: Candidate>(
    mut dets: Vec<T>,
    iou_threshold: f32,
    max_detections: usize,
    class_agnostic: bool,
) -> Vec<T> {
    dets.sort_by(|a, b| b.score().total_cmp(&a.score()));
    let mut kept: Vec<T> = Vec::new();
    for d in dets {
        if kept.len() >= max_detections {
            break;
        }
        let rivals = |k: &T| class_agnostic || k.class() == d.class();
        if kept.iter().all(|k| !rivals(k) || iou(k.bbox(), d.bbox()) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// How input-tensor coordinates map back to the original image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InverseTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub width: u32,
    pub height: u32,
}

impl InverseTransform {
    /// Input pixels are original pixels (a tensor sent as is, e.g. over OIP).
    pub fn identity(width: u32, height: u32) -> Self {
        Self { scale_x: 1.0, scale_y: 1.0, pad_x: 0.0, pad_y: 0.0, width, height }
    }

    /// Maps a box [x1, y1, x2, y2] in input pixels to original pixels, clipped to the image.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let w = self.width as f32;
        let h = self.height as f32;
        [
            ((b[0] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[1] - self.pad_y) / self.scale_y).clamp(0.0, h),
            ((b[2] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[3] - self.pad_y) / self.scale_y).clamp(0.0, h),
        ]
    }
}

/// Maps normalised (0..1) boxes of the original image to input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxTransform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl BoxTransform {
    pub fn to_input(&self, r: [f32; 4]) -> [f32; 4] {
        [
            r[0] * self.scale_x + self.pad_x,
            r[1] * self.scale_y + self.pad_y,
            r[2] * self.scale_x + self.pad_x,
            r[3] * self.scale_y + self.pad_y,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_half_overlapping_and_empty_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        // Intersection 50, union 150.
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
    }

    #[derive(Debug, PartialEq)]
    struct Det(usize, [f32; 4], f32);

    impl Candidate for Det {
        fn class(&self) -> usize {
            self.0
        }
        fn bbox(&self) -> &[f32; 4] {
            &self.1
        }
        fn score(&self) -> f32 {
            self.2
        }
    }

    #[test]
    fn nms_keeps_the_best_of_each_overlapping_group_per_class() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let near = [1.0, 0.0, 11.0, 10.0];
        let far = [50.0, 50.0, 60.0, 60.0];
        let dets = vec![Det(0, near, 0.8), Det(0, a, 0.9), Det(1, a, 0.5), Det(0, far, 0.7)];
        let kept = nms(dets, 0.5, 10);
        assert_eq!(kept, vec![Det(0, a, 0.9), Det(0, far, 0.7), Det(1, a, 0.5)]);
        let dets = vec![Det(0, a, 0.9), Det(0, far, 0.7), Det(1, a, 0.5)];
        assert_eq!(nms(dets, 0.5, 2).len(), 2);
    }
}
